"""The main job (`make demo`) scaled down: every method's row, paired entry, sweep cell and
mechanism field is produced, a rerun resumes without training again, a rerun with other
settings is refused; the statistics, the piece records, the mechanism metrics and the bad
flags; the teacher pipeline that makes the built-in rows runs at a small size."""

import gzip
import json
import math
from dataclasses import replace

import pytest
from scipy import stats as scipy_stats

from redi.data import builtin_task
from redi.data.builtin_task import verify
from redi.demo import QUICK, main, run_demo
from redi.demo.design import (
    METHODS,
    PREREGISTERED,
    SELECTION_METRIC,
    label,
    output_dir,
    recipe_value,
)
from redi.demo.pieces import StalePiece, claim
from redi.demo.run import choose_lrs, plateau
from redi.demo.stats import paired_difference, welch_dof
from redi.demo.summary import usable_window
from redi.demo.teacher import TeacherSettings, build_teacher_rows

# The default task once its teacher rows ship (else the one-style teacher task)
TASK = ("styles" if builtin_task.teacher_rows_path("styles").is_file()
        and builtin_task.base_model("styles").is_dir() else "addition")
# smaller than QUICK where it costs time and tests nothing more
CI_SIZE = replace(QUICK, problems=120, validation=4, test=4, stage2_points=1,
                  max_new_tokens=32)
CELL_KEYS = {SELECTION_METRIC, "val_greedy", "terse_share", "accuracy_by_style",
             "chosen_logp_per_token", "rejected_logp_per_token"}


def _last_step(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]["step"]


@pytest.mark.slow
def test_quick_compare_sweep_every_field_then_stale_and_resuming_reruns(tmp_path, capsys):
    grid = (1e-4, 1e-3)
    results = run_demo(tmp_path, [0], METHODS, CI_SIZE, task=TASK, grid=grid)
    stage2 = METHODS[1:]
    assert results["task"] == TASK and results["selection_metric"] == "val_sampled_pass1"
    assert results["preregistered"] == PREREGISTERED
    assert set(results["methods"]) == set(METHODS)
    for name, entry in results["methods"].items():
        assert len(entry["pass1"]) == len(entry["pass1_se"]) == len(entry["terse_share"]) == 1
        assert 0.0 <= entry["pass1"][0] <= 1.0
        assert 0.0 <= entry["terse_share"][0] <= 1.0
        assert {"verbose", "terse"} <= set(entry["accuracy_by_style"])
        assert all(len(v) == 1 for v in entry["accuracy_by_style"].values())
        assert (entry["lr"] in grid) == (name != "sft")
    assert results["methods"]["redi"]["alpha"] == 0.8
    assert results["methods"]["sft_continued"]["alpha"] == 0.0
    assert results["methods"]["sft_more"]["alpha"] is None
    controls = {f"redi_minus_{m}" for m in ("sft", "sft_more", "sft_continued")}
    others = {f"{m}_minus_redi" for m in stage2 if m not in ("sft_more", "sft_continued", "redi")}
    assert set(results["paired"]) == controls | others
    for entry in results["paired"].values():
        assert {"diff", "se", "dof", "t_crit", "called"} <= set(entry)
        assert entry["dof"] == CI_SIZE.test - 1  # one seed
    assert set(results["sweep"]) == set(stage2)
    for points in results["sweep"].values():
        assert set(points) == {"0.0001", "0.001"}
        for cell in points.values():
            assert CELL_KEYS <= set(cell)
            assert all(len(cell[k]) == 1 for k in CELL_KEYS - {"accuracy_by_style"})
            assert cell["chosen_logp_per_token"][0] < 0 and cell["rejected_logp_per_token"][0] < 0
    assert set(results["usable_window"]) == set(stage2)
    assert all(set(r) <= {"0.0001", "0.001"} and r for r in results["usable_window"].values())
    assert CELL_KEYS <= set(results["stage1"]["0"]["validation"])
    assert results["stage1"]["0"]["curve"] and "plateau" in results["stage1"]["0"]
    assert set(results["curves"]) == set(stage2)
    if TASK == "styles":
        assert {"error_rate_by_style", "terse_share_of_correct"} <= set(results["teacher"])
        assert "error rate by style: verbose" in (tmp_path / "results.md").read_text()
    # sft_more: the pairs' chosen traces, in the pairs' order, with REDI's steps
    data = tmp_path / "data"
    pairs = [json.loads(line) for line in (data / "pairs.jsonl").open()]
    chosen = [json.loads(line)["messages"] for line in
              (data / "chosen_traces" / "sft.jsonl").open()]
    assert chosen == [p["prompt"] + p["chosen"] for p in pairs]
    for lr in ("0.0001", "0.001"):
        assert (_last_step(tmp_path / "seed0" / "sft_more" / f"lr{lr}" / "run")
                == _last_step(tmp_path / "seed0" / "redi" / f"lr{lr}" / "run"))
    # the pre-registered falsification control: sft_more at its chosen rate, 3x the steps
    longer = results["sft_more_longer"]
    assert longer["lr"] == results["methods"]["sft_more"]["lr"] and longer["times_steps"] == 3
    assert CELL_KEYS - {"accuracy_by_style"} <= set(longer) and longer["seeds"] == [0]
    longer_run, chosen_run = (tmp_path / "seed0" / name / f"lr{longer['lr']:g}"
                              for name in ("sft_more_x3", "sft_more"))
    assert (json.loads((longer_run / "piece.json").read_text())["epochs"]
            == 3 * json.loads((chosen_run / "piece.json").read_text())["epochs"])
    assert _last_step(longer_run / "run") > _last_step(chosen_run / "run")
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["methods"] == results["methods"] and written["paired"] == results["paired"]
    table = (tmp_path / "results.md").read_text()
    for method in METHODS:
        assert f"| {label(method)} |" in table
    assert "redi − sft_more" in table and "| dof | t_crit |" in table
    assert "terse share of the validation samples %" in table and PREREGISTERED in table
    assert "Falsification control: more SFT" in table
    assert (tmp_path / "stage2_curves.png").stat().st_size > 10_000
    capsys.readouterr()

    # another task into the same folder: refused, one line naming the data piece
    assert main(["--quick", "--task", "slips", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{data} was made with task={TASK!r}" in err[0]
    assert "task='slips'" in err[0] and "--output-dir" in err[0]
    # other sampling settings: the first evaluation piece made with the old ones is refused
    with pytest.raises(StalePiece, match="max_new_tokens=32, this run asks for "
                                         "max_new_tokens=24"):
        run_demo(tmp_path, [0], METHODS, replace(CI_SIZE, max_new_tokens=24), task=TASK,
                 grid=grid)
    # the same settings: everything reused, nothing trained or generated again
    run = tmp_path / "seed0" / "redi" / "lr0.001"
    made = [run / "run" / "final" / "model.safetensors", run / "val_sampled" / "samples.jsonl",
            run / "pair_logprobs" / "logprobs.json", tmp_path / "data" / "pairs.jsonl"]
    stamps = [path.stat().st_mtime_ns for path in made]
    again = run_demo(tmp_path, [0], METHODS, CI_SIZE, task=TASK, grid=grid)
    assert again["methods"] == results["methods"] and again["sweep"] == results["sweep"]
    assert [path.stat().st_mtime_ns for path in made] == stamps
    assert "training problems in" not in capsys.readouterr().out


@pytest.mark.slow
def test_split_problems_in_two_worker_processes(tmp_path):
    from redi.demo.design import BASIC
    from redi.demo.split import STAGE1_DIR, STAGE2_DIR

    size = replace(CI_SIZE, problems=QUICK.problems)  # each half makes a step
    results = run_demo(tmp_path, [0, 1], ("sft", *BASIC), size, task=TASK, split=True,
                       workers=2)
    data = tmp_path / "data"

    def problems(path, key):
        return [json.loads(line)[key][0]["content"] for line in path.open()]

    first = problems(data / STAGE1_DIR / "sft.jsonl", "messages")
    second = problems(data / STAGE2_DIR / "pairs.jsonl", "prompt")
    assert first and second and not set(first) & set(second)  # no problem in both stages
    assert results["split_problems"] == {"stage1_sft_rows": len(first),
                                         "stage2_pairs": len(second)}
    assert results["workers"] == 2 and results["threads_per_worker"] >= 1
    trained_on = {"sft_more": data / STAGE2_DIR / "chosen_traces"}
    for seed in (0, 1):  # every seed's runs, each trained from its own Stage 1
        for method in BASIC:
            config = (tmp_path / f"seed{seed}" / method / f"lr{recipe_value(method, 'lr'):g}"
                      / "run" / "config.yaml").read_text()
            assert f"seed: {seed}" in config
            assert f"data: {trained_on.get(method, data / STAGE2_DIR)}\n" in config
    assert str(data / STAGE1_DIR) in (tmp_path / "seed1" / "sft" / "run" /
                                      "config.yaml").read_text()
    assert set(results["methods"]) == {"sft", *BASIC}
    assert len(results["methods"]["redi"]["pass1"]) == 2
    assert "Split problems: Stage 1 on" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_teacher_pipeline_at_a_small_size(tmp_path):
    settings = TeacherSettings(rule_problems=150, steps=2, base_checkpoint=1,
                               problems=6, generations=2, max_new_tokens=24, batch_size=4)
    output = tmp_path / "rows.jsonl.gz"
    rates = build_teacher_rows(output, tmp_path / "work", settings, tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "base" / "config.json").read_text())["dtype"] == "bfloat16"
    rows = [json.loads(line) for line in gzip.open(output, "rt")]
    assert len(rows) == 6 and rates["problems"] == 6 and rates["samples"] == 12
    for row in rows:
        assert len(row["generations"]) == 2 and row["generations"][0].startswith("<think>\n")
        verdicts = [verify(g, row["answer"]) for g in row["generations"]]
        assert row["correctness"]["llama_verification"] == verdicts
    samples = (tmp_path / "work" / "samples.jsonl").read_text()
    (tmp_path / "work" / "samples.jsonl").write_text(samples[:-5])  # a kill mid-line
    build_teacher_rows(output, tmp_path / "work", settings)
    assert (tmp_path / "work" / "samples.jsonl").read_text() == samples  # redrawn identically


def test_lr_choice_and_usable_window():
    assert choose_lrs({"redi": {1e-3: [0.5, 0.7], 1e-4: [0.6, 0.6], 1e-2: [0.1, 0.2]}}) == \
        {"redi": 1e-4}  # a tie goes to the smaller rate
    sweep = {"redi": {"1e-05": {SELECTION_METRIC: [0.70, 0.66]},  # mean 0.68: 2 points off
                      "3e-05": {SELECTION_METRIC: [0.71, 0.69]},
                      "0.0001": {SELECTION_METRIC: [0.70, 0.6]}}}
    assert usable_window(sweep) == {"redi": ["1e-05", "3e-05"]}


def test_paired_difference_with_welch_degrees_of_freedom():
    a, b = [[1.0, 0.5, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]], [[0.5, 0.5, 0.0, 1.0]] * 2
    paired = paired_difference(a, b)
    assert paired["per_seed"] == [0.125, 0.25]
    assert paired["diff"] == pytest.approx(0.1875)
    # problems: per-problem mean diffs (0.5, 0.25, 0, 0); seeds: (0.125, 0.25)
    var_p, var_s = (0.2393568 / 2) ** 2, (0.0883883 / 2 ** 0.5) ** 2
    assert paired["se_problems"] ** 2 == pytest.approx(var_p, rel=1e-6)
    assert paired["se_seeds"] ** 2 == pytest.approx(var_s, rel=1e-5)
    dof = (var_p + var_s) ** 2 / (var_p ** 2 / 3 + var_s ** 2 / 1)
    assert paired["dof"] == pytest.approx(dof, rel=1e-5)
    assert paired["t_crit"] == pytest.approx(scipy_stats.t.ppf(0.975, dof), rel=1e-5)
    assert not paired["called"]
    # one seed: n - 1 degrees of freedom; a clear difference on 30 problems is called
    one = paired_difference([[1.0] * 20 + [0.0] * 10], [[0.0] * 20 + [0.0] * 10])
    assert one["dof"] == 29 and one["t_crit"] == pytest.approx(2.045, abs=1e-3)
    assert one["called"] and one["se_seeds"] == 0
    assert welch_dof([(0.0, 3), (0.0, 2)]) == 3
    assert welch_dof([(0.0, 399), (1e-4, 2)]) == 2  # the seeds alone
    assert math.isclose(scipy_stats.t.ppf(0.975, 2), 4.3027, rel_tol=1e-4)


def test_plateau_rule_uses_the_paired_standard_error():
    n = 200
    before = [1.0] * 150 + [0.0] * 50  # 75 %
    same_errors = [1.0] * 150 + [1.0] * 5 + [0.0] * 45  # 77.5 %: 5 problems fixed, none lost
    flat = plateau([(1, before), (2, [0.0] * n), (3, same_errors)])  # last vs 2 before
    se = math.sqrt((5 / n) * (1 - 5 / n) * n / (n - 1) / n)  # sd of the 0/1 gains / sqrt(n)
    assert flat["gain"] == pytest.approx(0.025) and flat["gain_se"] == pytest.approx(se)
    assert not flat["plateau"]  # paired: 5 fixed and none lost is beyond noise
    churn = [0.0] * 10 + [1.0] * 140 + [1.0] * 15 + [0.0] * 35  # 10 lost, 15 fixed
    assert plateau([(1, before), (2, before), (3, churn)])["plateau"]
    assert plateau([(1, before)]) == {"plateau": False, "gain": None, "gain_se": None,
                                      "t_crit": None}


def test_piece_records_refuse_other_settings_and_unrecorded_folders(tmp_path):
    settings = {"piece": "evaluation", "samples": 4, "temperature": 0.6}
    piece = claim(tmp_path / "eval", settings)
    assert json.loads((tmp_path / "eval" / "piece.json").read_text()) == settings
    assert claim(tmp_path / "eval", dict(reversed(settings.items()))) == piece  # reused
    with pytest.raises(StalePiece) as error:
        claim(tmp_path / "eval", settings | {"samples": 2, "temperature": 0.0})
    assert str(error.value).startswith(f"{tmp_path / 'eval'} was made with samples=4, this "
                                       "run asks for samples=2: use another --output-dir")
    with pytest.raises(StalePiece, match="extra='x'"):
        claim(tmp_path / "eval", settings | {"extra": "x"})
    assert claim(tmp_path / "other", settings | {"samples": 2}).identity != piece.identity
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")
    with pytest.raises(StalePiece, match="holds no record of the settings"):
        claim(tmp_path / "old", settings)
    (tmp_path / "empty").mkdir()
    assert claim(tmp_path / "empty", settings).identity == piece.identity


def test_style_metrics_of_samples(tmp_path):
    from redi.demo.mechanism import style_metrics

    verbose = "<think>\nunits: 8 + 4 = 12, write 2, carry 1\n</think>\n\\boxed{12}"
    terse = "units: write 2, carry 1\ntens: write 1\n</think>\n\\boxed{12}"
    records = [("a", 0, verbose, True), ("a", 1, terse, False), ("b", 0, terse, True),
               ("b", 1, "no trace", False), ("b", 2, terse, True)]  # sample 2: beyond k
    (tmp_path / "samples.jsonl").write_text("".join(
        json.dumps({"id": i, "sample": j, "text": t, "correct": c}) + "\n"
        for i, j, t, c in records))
    metrics = style_metrics(tmp_path / "samples.jsonl", 2)
    assert metrics == {"terse_share": 0.5, "accuracy_by_style": {"verbose": 1.0, "terse": 0.5,
                                                                  "other": 0.0}}
    assert style_metrics(tmp_path / "samples.jsonl", 1)["accuracy_by_style"]["other"] is None


def test_pair_logprobs_per_token_match_full_logits(tmp_path):
    """The fused pair scoring against log_softmax of the model's full logits (float64)."""
    import torch
    from transformers import AutoModelForCausalLM

    from redi.data.formatting import IGNORE_INDEX
    from redi.data.tokenized import load_pairs
    from redi.data.tokenizer import load_tokenizer
    from redi.demo.design import RECIPES
    from redi.demo.mechanism import SCORING_RECIPE, pair_logprobs_per_token
    from redi.train.config import build_config
    from redi.train.loader import make_formatter

    model_dir = builtin_task.base_model("addition")
    rows = [{"prompt": [{"role": "user", "content": f"Compute {a} + {b}."}],
             "chosen": [{"role": "assistant", "content": f"<think>\nunits: write {a + b}\n"
                                                        f"</think>\n\\boxed{{{a + b}}}"}],
             "rejected": [{"role": "assistant", "content": f"<think>\nunits: {a} + {b} = "
                                                          f"{a + b + 1}, write {a + b + 1}\n"
                                                          f"</think>\n\\boxed{{{a + b + 1}}}"}]}
            for a, b in ((3, 4), (2, 5), (1, 1))]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = pair_logprobs_per_token(model_dir, tmp_path / "pairs.jsonl")

    tokenizer = load_tokenizer(str(model_dir))
    pairs = load_pairs(tmp_path / "pairs.jsonl",
                       make_formatter(build_config(RECIPES / SCORING_RECIPE), tokenizer))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    expected = {"chosen": [], "rejected": []}
    for pair in pairs:
        for side in expected:
            ids = torch.tensor([pair[f"{side}_input_ids"]])
            labels = torch.tensor(pair[f"{side}_labels"])
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0], -1)
            kept = labels != IGNORE_INDEX
            token_logp = logp[kept].gather(1, labels[kept][:, None]).squeeze(1)
            expected[side].append(float(token_logp.mean()))
    assert got["pairs"] == 3
    for side in expected:
        assert got[side] == pytest.approx(sum(expected[side]) / 3, abs=1e-4)
    assert got["chosen"] != pytest.approx(got["rejected"], abs=1e-3)


def test_chosen_traces_are_the_pairs_chosen_in_order(tmp_path):
    from redi.demo.task_data import chosen_traces

    pairs = [{"prompt": [{"role": "user", "content": f"p{i}"}],
              "chosen": [{"role": "assistant", "content": f"c{i}"}],
              "rejected": [{"role": "assistant", "content": f"r{i}"}],
              "uuid": f"u{i}", "chosen_generation": i % 2} for i in (3, 1, 2)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    rows = [json.loads(line) for line in (chosen_traces(tmp_path) / "sft.jsonl").open()]
    assert [r["messages"][1]["content"] for r in rows] == ["c3", "c1", "c2"]
    assert rows[0] == {"messages": pairs[0]["prompt"] + pairs[0]["chosen"], "uuid": "u3",
                       "generation": 1}


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "unknown --task 'nope'; choose one of styles, addition, slips"),
    (["--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["--grid", "1e-3,0"], "argument --grid: every learning rate must be > 0"),
    (["--grid", "1e-3,-1e-4"], "argument --grid: every learning rate must be > 0"),
    (["--grid", "1e-3,x"], "argument --grid: not a comma-separated list of numbers"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_each_mode_has_its_own_default_output_dir():
    assert output_dir(full=False, quick=False) == "runs/demo"
    assert output_dir(full=True, quick=False) == "runs/demo-full"
    assert output_dir(full=False, quick=True) == "runs/demo-quick"
    assert output_dir(full=True, quick=True) == "runs/demo-quick"


def test_table_labels_follow_the_recipes(monkeypatch):
    from redi.demo import design

    assert design.label("redi") == "REDI (alpha 0.8)"
    assert design.label("sft_continued") == "continued SFT (alpha 0)"
    assert design.label("sft_more") == "more SFT (token mean, pairs' chosen traces)"
    values = {("redi", "alpha"): 0.5, ("redi_floor", "alpha"): 0.8,
              ("redi_floor", "negative_floor"): 0.05}
    monkeypatch.setattr(design, "recipe_value", lambda method, key: values[(method, key)])
    assert design.label("redi") == "REDI (alpha 0.5)"
    assert design.label("redi_floor") == "REDI (alpha 0.8, floor 0.05)"
    assert design.label("dpo") == "DPO"


def test_report_remakes_the_committed_results(tmp_path):
    """docs/demo/results.md and the plot are what ``redi.demo.report`` makes of results.json
    (``--full`` writes the three together)."""
    from pathlib import Path

    from redi.demo.report import plot_curves, results_table

    docs = Path(__file__).parents[2] / "docs" / "demo"
    if not (docs / "results.json").is_file():
        pytest.skip("no results of the styles task committed yet (docs/demo/results.json)")
    results = json.loads((docs / "results.json").read_text())
    assert results_table(results) + "\n" == (docs / "results.md").read_text()
    png = plot_curves(tmp_path / "curves.png", results).read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
