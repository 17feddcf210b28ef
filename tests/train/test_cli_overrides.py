"""``key=value`` overrides are read wherever they stand among a command's options (before,
between and after them), in every command that takes them: sft, train, plan."""

from test_plan import TINY

from redi.train.cli import plan_main, sft_main, train_main


def test_sft_reads_overrides_after_the_options(capsys):
    argv = ["max_steps=1", "--config", "recipes/tiny_sft.yaml", "loss=dpo"]
    assert sft_main(argv) == 2
    assert "redi sft always trains loss=sft" in capsys.readouterr().err


def test_train_reads_overrides_after_the_options(capsys):
    argv = ["max_steps=1", "--config", "recipes/tiny_redi.yaml", "loss=sft"]
    assert train_main(argv) == 2
    assert "redi train is Stage 2" in capsys.readouterr().err


def test_plan_reads_overrides_between_and_after_the_options(capsys):
    argv = [*TINY[:3], "--gpu-memory", "80GiB", *TINY[3:], "--nproc", "1", "max_length=4096",
            "micro_batch_size=8", "cpu_offload=true"]
    assert plan_main(argv) == 0
    out = capsys.readouterr().out
    assert "cpu_offload" in out and "4096" in out
