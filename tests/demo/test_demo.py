"""The main job (`make demo`) scaled down: every method's row, the sweep, the paired
statistics and the files are produced, a rerun resumes, bad flags are one-line errors; the
teacher pipeline that makes the built-in rows runs at a small size."""

import gzip
import json

import pytest

from redi.data.builtin_task import verify
from redi.demo import QUICK, main, run_demo
from redi.demo.run import METHODS, choose_lrs, plateau
from redi.demo.stats import paired_difference
from redi.demo.teacher import TeacherSettings, build_teacher_rows


@pytest.mark.slow
def test_quick_demo_every_row_and_a_resuming_rerun(tmp_path, capsys):
    grid = (1e-3,)  # one grid point keeps it fast; choose_lrs is tested below
    results = run_demo(tmp_path, [0], METHODS, QUICK, grid=grid)
    assert set(results["methods"]) == set(METHODS)
    for name, entry in results["methods"].items():
        assert len(entry["pass1"]) == len(entry["pass1_se"]) == 1
        assert 0.0 <= entry["pass1"][0] <= 1.0
        assert (entry["lr"] in grid) == (name != "sft")
    assert results["methods"]["redi"]["alpha"] == 0.8
    assert results["methods"]["sft_continued"]["alpha"] == 0.0
    assert set(results["sweep"]) == set(METHODS[1:])
    assert all(set(points) == {"0.001"} for points in results["sweep"].values())
    logged = [json.loads(line) for line in
              (tmp_path / "seed0" / "redi" / "lr0.001" / "metrics.jsonl").open()]
    assert results["sweep_chosen_logp_avg"]["redi"]["0.001"] == [logged[-1]["chosen_logps_avg"]]
    assert all(v[0] < 0 for points in results["sweep_chosen_logp_avg"].values()
               for v in points.values())
    assert {"diff", "se"} <= set(results["paired"]["redi_minus_sft_continued"])
    assert set(results["curves"]) == set(METHODS[1:])
    assert results["stage1"]["0"]["curve"] and "plateau" in results["stage1"]["0"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["methods"] == results["methods"] and written["task"] == "teacher"
    table = (tmp_path / "results.md").read_text()
    assert "| continued SFT (alpha 0) |" in table and "| REDI (alpha 0.8) |" in table
    assert "redi − sft_continued" in table
    assert "chosen traces' log-prob per token" in table
    assert (tmp_path / "stage2_curves.png").stat().st_size > 10_000
    capsys.readouterr()
    final = tmp_path / "seed0" / "redi" / "lr0.001" / "final" / "model.safetensors"
    stamp = final.stat().st_mtime_ns
    again = run_demo(tmp_path, [0], METHODS, QUICK, grid=grid)
    assert again["methods"] == results["methods"] and again["sweep"] == results["sweep"]
    assert final.stat().st_mtime_ns == stamp  # nothing trained again
    assert "task 'teacher'" not in capsys.readouterr().out  # nor generated again


@pytest.mark.slow
def test_split_problems_in_two_worker_processes(tmp_path):
    from redi.demo.run import BASIC
    from redi.demo.split import STAGE1_DIR, STAGE2_DIR

    results = run_demo(tmp_path, [0, 1], ("sft", *BASIC), QUICK, split=True, workers=2)
    data = tmp_path / "data"

    def problems(path, key):
        return [json.loads(line)[key][0]["content"] for line in path.open()]

    first = problems(data / STAGE1_DIR / "sft.jsonl", "messages")
    second = problems(data / STAGE2_DIR / "pairs.jsonl", "prompt")
    assert first and second and not set(first) & set(second)  # no problem in both stages
    assert results["split_problems"] == {"stage1_sft_rows": len(first),
                                         "stage2_pairs": len(second)}
    assert results["workers"] == 2 and results["threads_per_worker"] >= 1
    for seed in (0, 1):  # every seed's runs, each trained from its own Stage 1
        for method in BASIC:
            config = (tmp_path / f"seed{seed}" / method / "lr1e-06" / "config.yaml").read_text()
            assert f"seed: {seed}" in config and str(data / STAGE2_DIR) in config
    assert str(data / STAGE1_DIR) in (tmp_path / "seed1" / "sft" / "config.yaml").read_text()
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


def test_lr_choice_and_paired_difference():
    assert choose_lrs({"redi": {1e-3: [0.5, 0.7], 1e-4: [0.6, 0.6], 1e-2: [0.1, 0.2]}}) == \
        {"redi": 1e-4}  # a tie goes to the smaller rate
    a, b = [[1.0, 0.5, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]], [[0.5, 0.5, 0.0, 1.0]] * 2
    paired = paired_difference(a, b)
    assert paired["per_seed"] == [0.125, 0.25]
    assert paired["diff"] == pytest.approx(0.1875)
    # problems: per-problem mean diffs (0.5, 0.25, 0, 0); seeds: (0.125, 0.25)
    assert paired["se_problems"] == pytest.approx(0.2393568 / 2)
    assert paired["se_seeds"] == pytest.approx(0.0883883 / 2 ** 0.5)
    assert not paired["called"]


@pytest.mark.parametrize("argv, message", [
    (["--task", "nope"], "unknown --task 'nope'; choose one of teacher, slips"),
    (["--seeds", "0"], "argument --seeds: must be >= 1, got 0"),
    (["--grid", "1e-3,0"], "argument --grid: every learning rate must be > 0"),
    (["--grid", "1e-3,x"], "argument --grid: not a comma-separated list of numbers"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_table_labels_follow_the_recipes_alpha(monkeypatch):
    from redi.demo import design

    assert design.label("redi") == "REDI (alpha 0.8)"
    assert design.label("sft_continued") == "continued SFT (alpha 0)"
    values = {("redi", "alpha"): 0.5}
    monkeypatch.setattr(design, "recipe_value", lambda method, key: values[(method, key)])
    assert design.label("redi") == "REDI (alpha 0.5)"
    assert design.label("dpo") == "DPO"


def test_report_remakes_the_committed_results(tmp_path):
    """docs/demo/results.md and the plot are what ``redi.demo.report`` makes of results.json
    (``--full`` writes the three together)."""
    from pathlib import Path

    from redi.demo.report import plot_curves, results_table

    docs = Path(__file__).parents[2] / "docs" / "demo"
    results = json.loads((docs / "results.json").read_text())
    assert results_table(results) + "\n" == (docs / "results.md").read_text()
    png = plot_curves(tmp_path / "curves.png", results).read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000


def test_plateau_rule_is_gain_within_two_standard_errors():
    # still rising: +12 points over the last 3 of 4 points, 2 SE = 6.2 points on 200 problems
    rising = plateau([(16, 0.04), (32, 0.07), (48, 0.135), (63, 0.19)], 200)
    assert not rising["plateau"] and rising["gain"] == pytest.approx(0.12)
    assert rising["gain_se"] == pytest.approx(((0.07 * 0.93 + 0.19 * 0.81) / 200) ** 0.5)
    flat = plateau([(390, 0.755), (455, 0.755), (504, 0.78)], 200)  # +2.5, 2 SE = 8.5
    assert flat["plateau"]
    assert not plateau([(390, 0.755), (455, 0.755), (504, 0.78)], 20_000)["plateau"]
    assert plateau([(1, 0.5)], 200) == {"plateau": False, "gain": None, "gain_se": None}
