"""The FSDP2 trainer on CPU (gloo): one vs two processes, exact resume, export, the fused
loss's gradients under FSDP2, the tiny recipes, and its bad-input and fault handling.

Runs go through the real command line (``python -m redi.cli``, ``torchrun`` for two
processes) on a tiny Qwen2 and a small built-in-task data set.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from redi.data.formatting import Formatter
from redi.data.prepare import PrepareOptions, prepare_builtin_task
from redi.data.tokenizer import load_tokenizer

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
TINY_MODEL = [
    "model_config.model_type=qwen2", "model_config.vocab_size=384",
    "model_config.hidden_size=32", "model_config.intermediate_size=64",
    "model_config.num_hidden_layers=2", "model_config.num_attention_heads=4",
    "model_config.num_key_value_heads=2", "model_config.max_position_embeddings=256",
]
COMMON = ["global_batch_size=8", "micro_batch_size=4", "max_length=160",
          "max_prompt_length=48", "progress=false", "log_every=1", "warmup_ratio=0.25"]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("builtin")
    formatter = Formatter(load_tokenizer())
    prepare_builtin_task(directory, formatter, num_problems=200, num_test=20,
                         options=PrepareOptions(progress=False))
    return directory


def run_cli(args, nproc=1, timeout=300, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    cmd = launcher + ["-m", "redi.cli", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def metrics(output_dir) -> dict[int, dict]:
    """Per step, its last logged record (a resumed run logs steps again)."""
    records = [json.loads(line) for line in Path(output_dir, "metrics.jsonl").open()]
    return {r["step"]: r for r in records}


def sft(data_dir, out, *extra, nproc=1):
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={out}", "lr=3e-3",
                      *TINY_MODEL, *COMMON, *extra], nproc=nproc)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def sft_export(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    sft(data_dir, out, "max_steps=4")
    return out / "final"


def stage2(data_dir, init, out, *extra, nproc=1, check=True):
    result = run_cli(["train", f"data={data_dir}", f"init_from={init}", f"output_dir={out}",
                      "lr=1e-3", *COMMON, *extra], nproc=nproc)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_processes_match_one_process(data_dir, sft_export, tmp_path):
    """Same global batch (8 pairs): 1 process x 2 micro-batches vs 2 processes x 1."""
    stage2(data_dir, sft_export, tmp_path / "one", "max_steps=3")
    stage2(data_dir, sft_export, tmp_path / "two", "max_steps=3", nproc=2)
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    for step in one:
        assert one[step]["tokens"] == two[step]["tokens"]
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-5, abs=1e-6)
        assert two[step]["grad_norm"] == pytest.approx(one[step]["grad_norm"], rel=1e-4)
    # a two-process checkpoint exports from one process (weights reshard): same weights
    result = run_cli(["export", "--checkpoint", tmp_path / "two" / "checkpoints" / "step_00000003",
                      "--output-dir", tmp_path / "exported"])
    assert result.returncode == 0, result.stderr[-3000:]
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    final = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert exported.keys() == final.keys()
    assert all(torch.equal(exported[k], final[k]) for k in final)
    # and the prompt record redi eval reads, as the run's own export has it
    record = (tmp_path / "exported" / "training_prompt.json").read_text()
    assert record == (tmp_path / "two" / "final" / "training_prompt.json").read_text()


def test_resume_reproduces_uninterrupted_run(data_dir, sft_export, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    stage2(data_dir, sft_export, full, "max_steps=6", "save_every=2", "keep_last=5")
    # An interrupted run: only the step-2 checkpoint survived (a crash at any later point),
    # with the run's config.yaml (written when it started: it says whose checkpoint it is).
    shutil.copytree(full / "checkpoints" / "step_00000002",
                    resumed / "checkpoints" / "step_00000002")
    shutil.copy(full / "config.yaml", resumed / "config.yaml")
    result = stage2(data_dir, sft_export, resumed, "max_steps=6", "save_every=2",
                    "resume=auto")
    assert "resumed from" in result.stderr + result.stdout
    a, b = metrics(full), metrics(resumed)
    assert sorted(b) == [3, 4, 5, 6]
    for step in b:
        assert b[step]["loss"] == a[step]["loss"]
        assert b[step]["lr"] == a[step]["lr"]


def test_export_reloads_with_identical_logits(data_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from redi.train.checkpoint import load_checkpoint
    from redi.train.config import build_config
    from redi.train.distributed import init_distributed, shutdown
    from redi.train.modeling import build_model

    out = tmp_path / "run"
    sft(data_dir, out, "max_steps=2")
    config = build_config(None, [*TINY_MODEL, "dtype=fp32"])
    env = init_distributed()
    try:
        model = build_model(config, env.device)
        optimizer = torch.optim.AdamW(model.parameters())
        load_checkpoint(out / "checkpoints" / "step_00000002", model, optimizer)
        ids = torch.randint(0, 322, (2, 20))
        with torch.no_grad():  # through the FSDP2 root, as in training: logits from (w, h)
            trained = model({"input_ids": ids, "labels": ids}, lambda w, h, y, b: h @ w.T)
    finally:
        shutdown()
    exported = AutoModelForCausalLM.from_pretrained(out / "final", dtype=torch.float32)
    with torch.no_grad():
        reloaded = exported(input_ids=ids).logits
    assert torch.equal(trained, reloaded)
    assert (out / "final" / "model.safetensors").is_file()
    assert (out / "final" / "tokenizer.json").is_file()


@pytest.mark.parametrize("start_group", [True, False])
def test_exit_process_keeps_status_and_output(start_group):
    """After a process group, the command line leaves through os._exit (see exit_process):
    the status and buffered output must survive; without a group it returns to sys.exit."""
    script = ("import sys\n"
              "from redi.train.distributed import exit_process, init_distributed, shutdown\n"
              f"if {start_group}:\n    init_distributed(); shutdown()\n"
              "print('buffered', end='')\n"
              "exit_process(3)\n"
              "print(' returned', end='')\n"
              "sys.exit(4)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert (result.returncode, result.stdout) == (
        (3, "buffered") if start_group else (4, "buffered returned")), result.stderr[-2000:]


@pytest.mark.parametrize("tied", ["tied", "untied", "softcapped"])
def test_fused_loss_under_fsdp2_matches_full_logits(tied):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "workers" / "fsdp_fused_grads.py"), tied],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max relative gradient error" in result.stdout


def test_tiny_recipes_stage1_then_stage2(data_dir, tmp_path):
    result = run_cli(["sft", "--config", REPO / "recipes" / "tiny_sft.yaml",
                      f"data={data_dir}", f"output_dir={tmp_path / 'sft'}", "max_steps=2",
                      "progress=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_cli(["train", "--config", REPO / "recipes" / "tiny_redi.yaml",
                      f"data={data_dir}", f"init_from={tmp_path / 'sft' / 'final'}",
                      f"output_dir={tmp_path / 'redi'}", "max_steps=2", "progress=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "redi" / "final" / "model.safetensors").is_file()
    record = metrics(tmp_path / "redi")[2]
    for key in ("loss", "lr", "grad_norm", "chosen_logps_avg", "rejected_logps_avg",
                "reward_margins", "tokens_per_s", "peak_mem_gb"):
        assert key in record
    # which backend the fused loss ran (auto on CPU: the chunked PyTorch path)
    assert record["loss_backend"] == "torch"
    assert "loss backend: torch (loss_backend=auto)" in result.stdout


def test_dpo_cached_reference_equals_online(data_dir, sft_export, tmp_path):
    cached, online = tmp_path / "cached", tmp_path / "online"
    stage2(data_dir, sft_export, cached, "loss=dpo", "beta=0.5", "max_steps=2")
    stage2(data_dir, sft_export, online, "loss=dpo", "beta=0.5", "max_steps=2",
           "reference=online")
    assert (cached / "reference_logps.safetensors").is_file()
    a, b = metrics(cached), metrics(online)
    for step in (1, 2):
        assert a[step]["loss"] == pytest.approx(b[step]["loss"], rel=1e-5)
    # At step 1 the policy is the reference: every DPO margin is 0 and the loss log 2.
    assert a[1]["loss"] == pytest.approx(0.693147, abs=1e-4)


@pytest.mark.parametrize("loss, attn", [("dpo-online", "sdpa"), ("dpo-cached", "eager"),
                                        ("redi", "eager")])
def test_packed_batches_train_like_padded_ones(data_dir, sft_export, tmp_path, loss, attn):
    """Packing (one sequence at a time for sdpa and eager) changes nothing but the layout."""
    name, _, reference = loss.partition("-")
    extra = [f"loss={name}", f"attn_implementation={attn}", "max_steps=2"]
    extra += [f"reference={reference}"] if reference else []
    stage2(data_dir, sft_export, tmp_path / "padded", *extra, "packing=false")
    stage2(data_dir, sft_export, tmp_path / "packed", *extra, "packing=true")
    padded, packed = metrics(tmp_path / "padded"), metrics(tmp_path / "packed")
    for step in (1, 2):
        assert packed[step]["loss"] == pytest.approx(padded[step]["loss"], rel=1e-4)
        assert packed[step]["grad_norm"] == pytest.approx(padded[step]["grad_norm"], rel=1e-3)
        assert packed[step]["reward_margins"] == pytest.approx(padded[step]["reward_margins"],
                                                               rel=1e-3, abs=1e-5)


def test_resume_refuses_a_checkpoint_of_another_loss(data_dir, sft_export, tmp_path):
    stage2(data_dir, sft_export, tmp_path, "max_steps=1")
    result = stage2(data_dir, sft_export, tmp_path, "loss=simpo", "max_steps=2", check=False)
    assert result.returncode == 2
    assert "changed training settings (loss: 'redi' -> 'simpo'" in result.stderr


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs must be > 0"), ("grad_clip=0", "grad_clip must be > 0"),
    ("keep_last=-1", "keep_last must be >= 0"), ("alpha=1.5", "alpha must be in [0, 1]"),
    ("beta=0", "beta must be > 0"),
    ("negative_floor=0", "negative_floor must be a probability in (0, 1) or None (off), got 0.0"),
    ("negative_floor=1", "negative_floor must be a probability in (0, 1) or None (off), got 1.0"),
    ("negative_floor=high", "negative_floor must be float or null, got 'high'")])
def test_out_of_range_values_are_config_errors(override, message):
    from redi.train.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config(None, [*TINY_MODEL, override])


@pytest.mark.parametrize("loss", ["dpo", "simpo", "sft"])
def test_negative_floor_is_for_redi_only(loss):
    from redi.train.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=re.escape(
            f"negative_floor applies to loss redi only, got loss={loss} (set "
            "negative_floor=null)")):
        build_config(None, [*TINY_MODEL, f"loss={loss}", "negative_floor=0.05"])


def test_tiny_redi_floor_recipe_is_tiny_redi_with_a_floor():
    """The recipe differs from tiny_redi in its floor and output_dir only (same lr), the
    trainer's loss gets the floor, and the run records it (config.yaml, the settings line)."""
    import dataclasses

    from redi.train.config import build_config, describe, to_yaml
    from redi.train.loop import make_loss

    plain = build_config(REPO / "recipes" / "tiny_redi.yaml")
    floor = build_config(REPO / "recipes" / "tiny_redi_floor.yaml")
    a, b = dataclasses.asdict(plain), dataclasses.asdict(floor)
    assert {k for k in a if a[k] != b[k]} == {"negative_floor", "output_dir"}
    assert (plain.negative_floor, floor.negative_floor) == (None, 0.05)
    assert make_loss(floor).negative_floor == 0.05 and make_loss(plain).negative_floor is None
    assert "negative_floor: 0.05" in to_yaml(floor).splitlines()
    assert "negative_floor=0.05" in describe(floor).split()


def test_no_model_is_a_config_error():
    from redi.train.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="no model: set model"):
        build_config(None, ["data=builtin"])


def test_simpo_single_pass_trains_like_two_pass(data_dir, sft_export, tmp_path):
    for single_pass in ("false", "true"):
        stage2(data_dir, sft_export, tmp_path / single_pass, "loss=simpo", "max_steps=2",
               f"loss_single_pass={single_pass}")
    two_pass, single = metrics(tmp_path / "false"), metrics(tmp_path / "true")
    for step in (1, 2):
        assert single[step]["loss"] == pytest.approx(two_pass[step]["loss"], rel=1e-5)
        assert single[step]["grad_norm"] == pytest.approx(two_pass[step]["grad_norm"], rel=1e-4)
        assert 0 <= single[step]["reward_accuracy"] <= 1


def test_unknown_key_lists_valid_keys(tmp_path):
    result = run_cli(["sft", "lrr=1", f"output_dir={tmp_path}"])
    assert result.returncode == 2
    assert "unknown config key 'lrr'; valid keys: loss, model, model_config" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_type_is_an_error(tmp_path):
    result = run_cli(["train", "max_steps=many", f"output_dir={tmp_path}"])
    assert result.returncode == 2
    assert "max_steps must be int or null, got 'many'" in result.stderr


def test_mismatched_checkpoint_is_a_clear_error(data_dir, tmp_path):
    sft(data_dir, tmp_path, "max_steps=1")
    bigger = [a.replace("hidden_size=32", "hidden_size=48") for a in TINY_MODEL]
    # in the same output_dir the changed model_config is refused before any loading
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path}", *bigger, *COMMON,
                      "lr=3e-3", "max_steps=2", "resume=auto"])
    assert result.returncode == 2
    assert "changed training settings (model_config:" in result.stderr
    # a new run started from that checkpoint: the shapes are compared
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path / 'new'}", *bigger,
                      *COMMON, "max_steps=2",
                      f"resume={tmp_path / 'checkpoints' / 'step_00000001'}"])
    assert result.returncode == 2
    assert "does not match the model" in result.stderr
    assert "Traceback" not in result.stderr


def test_nonfinite_loss_stops_with_step_and_keeps_checkpoint(data_dir, tmp_path):
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path}", *TINY_MODEL,
                      *COMMON, "lr=1e9", "warmup_ratio=0", "grad_clip=1e30", "max_steps=20",
                      "save_every=1"])
    assert result.returncode == 1, result.stderr[-2000:]
    assert "training diverged: step " in result.stderr
    step = int(result.stderr.split("training diverged: step ")[1].split(":")[0])
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept[-1] == f"step_{step - 1:08d}"
    assert not (tmp_path / "final").exists()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    proc = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path}", *TINY_MODEL,
                    *COMMON, "max_steps=100000"], popen=True)
    log = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    saved = sorted((tmp_path / "checkpoints").iterdir())
    assert len(saved) == 1 and str(saved[0]) in out
    assert "stopped by signal" in err + out
    step = int(saved[0].name.split("_")[1])
    assert max(metrics(tmp_path)) == step
