# ruff: noqa: F811  (pytest fixtures imported from test_trainer)
"""Run-level faults (issue 16) through the command line: exports never destroy a directory,
damaged checkpoints, non-finite settings and updates, resumes with changed settings, two
runs on one output directory, and metrics after a resume."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_checkpoint_faults import _Payload, craft_pickled_item, edit_trainer_json
from test_trainer import COMMON, TINY_MODEL, data_dir, run_cli, sft, sft_export, stage2  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    sft(data_dir, out, "max_steps=2", "save_every=1", "keep_last=5")
    return out


def _export(checkpoint, output, *extra):
    return run_cli(["export", "--checkpoint", checkpoint, "--output", output, *extra])


def _one_line_error(result, code=2):
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def _resume(data_dir, run):
    """``redi sft ... resume=auto`` with the settings of ``finished_run``."""
    return run_cli(["sft", f"data={data_dir}", f"output_dir={run}", "lr=3e-3", *TINY_MODEL,
                    *COMMON, "max_steps=2", "save_every=1", "keep_last=5", "resume=auto"])


@pytest.mark.parametrize("command,key", [
    ("export", "model.lm.model.embed_tokens.weight"),
    ("resume", "model.lm.model.embed_tokens.weight"),
    ("resume", "optim.param_groups.0.lr"),
])
def test_a_crafted_shard_item_never_runs(data_dir, finished_run, tmp_path, command, key):
    """A weight or the lr re-declared as a pickled item whose payload creates a file, with
    the manifest recomputed: refused in one line before the payload runs."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    newest = run / "checkpoints" / "step_00000002"
    marker = tmp_path / "payload-ran"
    craft_pickled_item(newest, key, _Payload(marker))
    result = _export(newest, tmp_path / "out") if command == "export" else _resume(data_dir, run)
    line = _one_line_error(result)
    assert not marker.exists()
    assert f"refused checkpoint {newest}: " in line and key in line
    assert "posix.system" in line if key.startswith("optim.") else ".metadata" in line
    assert not (tmp_path / "out").exists()


def test_export_never_deletes_a_run_or_a_users_directory(finished_run, tmp_path):
    step = finished_run / "checkpoints" / "step_00000002"
    before = sorted(p.name for p in finished_run.iterdir())
    line = _one_line_error(_export(step, finished_run))
    assert "holds training checkpoints" in line
    assert sorted(p.name for p in finished_run.iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    line = _one_line_error(_export(step, mine))
    assert "is not empty and is not a redi export" in line and "--overwrite" in line
    assert (mine / "notes.txt").read_text() == "keep me"
    assert _export(step, tmp_path / "new").returncode == 0
    assert _export(step, tmp_path / "new").returncode == 0  # an earlier export is replaced
    assert _export(step, mine, "--overwrite").returncode == 0
    assert (mine / "model.safetensors").is_file() and not (mine / "notes.txt").exists()
    # --overwrite never replaces checkpoints, nor a directory holding a run at any depth
    line = _one_line_error(_export(step, finished_run / "checkpoints", "--overwrite"))
    assert "holds training checkpoints" in line
    assert sorted(p.name for p in finished_run.iterdir()) == before
    assert (step / "trainer.json").is_file()
    workspace = tmp_path / "workspace"
    shutil.copytree(finished_run, workspace / "run")
    line = _one_line_error(_export(step, workspace, "--overwrite"))
    assert f"holds training checkpoints (in {workspace / 'run'})" in line
    assert sorted(p.name for p in (workspace / "run").iterdir()) == before
    (tmp_path / "a-file").write_text("keep me")
    line = _one_line_error(_export(step, tmp_path / "a-file"))
    assert "is a file, not a directory" in line


def test_only_an_earlier_export_is_replaced_without_overwrite(tmp_path):
    from redi.train.export_dir import ExportError, check_export_target, mark_export

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"weights")
    mark_export(export, "step 1")
    check_export_target(export)  # an earlier export, as it was written
    (export / "eval").mkdir()
    (export / "eval" / "samples.jsonl").write_text("{}\n")  # a user's file inside it
    with pytest.raises(ExportError, match="is not empty and is not a redi export"):
        check_export_target(export)
    check_export_target(export, overwrite=True)
    workspace = tmp_path / "workspace"
    (workspace / "runs" / "a" / "checkpoints" / "step_00000001").mkdir(parents=True)
    (workspace / "runs" / "a" / "checkpoints" / "step_00000001" / "trainer.json").write_text("{}")
    mark_export(workspace, "forged")
    for target in (workspace, workspace / "runs", workspace / "runs" / "a" / "checkpoints"):
        with pytest.raises(ExportError, match=r"holds training checkpoints \(in " +
                           re.escape(str(workspace / "runs" / "a"))):
            check_export_target(target, overwrite=True)


@pytest.mark.parametrize("key,value", [("tokens_seen", "12"), ("scheduler.last_epoch", "x")])
def test_resume_from_a_hand_edited_trainer_json_is_one_line(data_dir, finished_run, tmp_path,
                                                            key, value):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "checkpoints" / "step_00000002")  # so that the resume trains a step
    older = run / "checkpoints" / "step_00000001"
    edit_trainer_json(older, key, value)
    line = _one_line_error(_resume(data_dir, run))
    assert line.startswith(f"redi: {older / 'trainer.json'}: {key} is {value!r}, not ")


def test_a_checkpoint_that_is_a_symbolic_link_is_refused_before_training(data_dir, finished_run,
                                                                          tmp_path):
    """A run removes old checkpoints itself (keep_last), which it cannot do through a link."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    linked = run / "checkpoints" / "step_00000001"
    moved = tmp_path / "elsewhere" / "step_00000001"
    moved.parent.mkdir()
    shutil.move(linked, moved)
    linked.symlink_to(moved)
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={run}", "lr=3e-3", *TINY_MODEL,
                      *COMMON, "max_steps=3", "save_every=1", "keep_last=2"])
    line = _one_line_error(result)
    assert line.startswith(f"redi: checkpoint {linked} is a symbolic link (to {moved})")
    assert (moved / "trainer.json").is_file() and linked.is_symlink()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000001",
                                                                         "step_00000002"]


def test_export_of_a_damaged_checkpoint_names_the_intact_one(finished_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    newest = run / "checkpoints" / "step_00000002"
    shard = next(newest.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[100:4196] = bytes(4096)  # 4 KiB overwritten in place
    shard.write_bytes(bytes(data))
    line = _one_line_error(_export(newest, tmp_path / "out"))
    assert f"checkpoint {newest} is damaged" in line
    assert str(run / "checkpoints" / "step_00000001") in line
    assert not (tmp_path / "out").exists()


def test_export_without_the_runs_data_warns_that_the_prompt_record_is_missing(finished_run,
                                                                             tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = str(tmp_path / "moved-away")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = _export(run / "checkpoints" / "step_00000002", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "moved-away/sft.jsonl (the run's data) is gone" in result.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "training_prompt.json").exists()


@pytest.mark.parametrize("value", ["inf", ".nan", "-.inf"])
def test_nonfinite_float_keys_are_config_errors(value):
    from redi.train.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="lr must be a finite number"):
        build_config(None, [*TINY_MODEL, f"lr={value}"])


def test_nonfinite_parameters_stop_the_run_and_are_never_exported():
    """AdamW moves each parameter by about lr per step, so with a finite lr (now checked)
    only a corrupt state makes a parameter non-finite: both guards are tested directly."""
    import torch

    from redi.train.export_dir import ExportError, check_finite
    from redi.train.loop import parameters_finite

    model = torch.nn.Linear(4, 3)
    assert parameters_finite(model)
    check_finite(model.state_dict(), "step 1")
    with torch.no_grad():
        model.weight[1, 2] = float("nan")
    assert not parameters_finite(model)
    with pytest.raises(ExportError, match=r"step 1 has non-finite weights \(1 tensors, e.g. "
                                          r"weight\); not exported"):
        check_finite(model.state_dict(), "step 1")


def test_resume_with_changed_settings_is_refused_and_config_kept(finished_run):
    config = (finished_run / "config.yaml").read_text()
    result = run_cli(["sft", f"data={yaml.safe_load(config)['data']}",
                      f"output_dir={finished_run}", *TINY_MODEL, *COMMON, "lr=5e-3",
                      "max_steps=2", "save_every=1", "keep_last=5", "max_length=150"])
    line = _one_line_error(result)
    assert "changed training settings" in line
    assert "lr: 0.003 -> 0.005" in line and "max_length: 160 -> 150" in line
    assert (finished_run / "config.yaml").read_text() == config


def test_a_second_run_on_a_live_output_dir_is_refused(data_dir, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"host": os.uname().nodename,
                                                    "pid": sleeper.pid}))
        result = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path}", *TINY_MODEL,
                          *COMMON, "max_steps=1"])
        line = _one_line_error(result)
        assert f"is in use by another run (pid {sleeper.pid}" in line
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is gone: its lock is stale and the run takes it over
    sft(data_dir, tmp_path, "max_steps=1")
    assert not (tmp_path / ".lock").exists()


def test_metrics_hold_each_step_once_after_a_resume(data_dir, tmp_path):
    import shutil

    sft(data_dir, tmp_path, "max_steps=4", "save_every=2", "keep_last=5")
    shutil.rmtree(tmp_path / "checkpoints" / "step_00000004")  # as if killed after step 4
    sft(data_dir, tmp_path, "max_steps=4", "save_every=2", "keep_last=5")
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]


def test_run_lock_detects_a_stale_pid(tmp_path):
    from redi.run_lock import OutputDirInUse, RunLock

    with RunLock(tmp_path):
        with pytest.raises(OutputDirInUse, match="in use by another run"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid}))
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def test_sft_refuses_a_tokenizer_that_loses_text(data_dir, tmp_path):
    from redi.data.tokenizer import BUILTIN_TOKENIZER_DIR

    tokenizer = tmp_path / "tok"
    shutil.copytree(BUILTIN_TOKENIZER_DIR, tokenizer)
    spec = json.loads((tokenizer / "tokenizer.json").read_text())
    spec["decoder"] = None
    (tokenizer / "tokenizer.json").write_text(json.dumps(spec))
    result = run_cli(["sft", f"data={data_dir}", f"output_dir={tmp_path / 'run'}",
                      f"tokenizer={tokenizer}", *TINY_MODEL, *COMMON, "max_steps=1"])
    line = _one_line_error(result)
    assert line.startswith(f"redi: {tokenizer}: tokenizer does not give text back")


def test_dpo_reference_covers_only_the_steps_run(data_dir, sft_export, tmp_path):
    from safetensors.torch import load_file

    result = stage2(data_dir, sft_export, tmp_path, "loss=dpo", "max_steps=2", "progress=true")
    assert "DPO reference" in result.stderr
    table = load_file(tmp_path / "reference_logps.safetensors")["logps"]
    computed = table.isfinite().all(dim=1)
    assert int(computed.sum()) == 16  # 2 steps x 8 pairs, of the set's
    assert len(table) > 2 * 16  # the set has many more pairs than the two steps use
    # a longer run needs more pairs: the cache is rebuilt, the steps run agree
    longer = tmp_path / "longer"
    longer.mkdir()
    shutil.copy(tmp_path / "reference_logps.safetensors", longer)
    stage2(data_dir, sft_export, longer, "loss=dpo", "max_steps=3")
    table = load_file(longer / "reference_logps.safetensors")["logps"]
    assert int(table.isfinite().all(dim=1).sum()) == 24
    first = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    second = [json.loads(line) for line in (longer / "metrics.jsonl").open()]
    assert first[0]["loss"] == second[0]["loss"]


def _sft_cli(data_dir, out, *extra):
    return run_cli(["sft", f"data={data_dir}", f"output_dir={out}", "lr=3e-3", *TINY_MODEL,
                    *COMMON, *extra])


def test_a_new_run_never_inherits_another_runs_checkpoints(finished_run, data_dir, tmp_path):
    """resume=never into a directory holding an older run's checkpoints is refused; with
    overwrite=true they are moved aside, and the new run resumes only from its own."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    old_id = yaml.safe_load((run / "config.yaml").read_text())["run_id"]
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    line = _one_line_error(_sft_cli(data_dir, run, "max_steps=1", "resume=never"))
    assert "not this run's" in line and "overwrite=true" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    result = _sft_cli(data_dir, run, "max_steps=1", "resume=never", "overwrite=true")
    assert result.returncode == 0, result.stderr[-2000:]
    new_id = yaml.safe_load((run / "config.yaml").read_text())["run_id"]
    assert new_id != old_id
    assert sorted(p.name for p in (run / f"checkpoints.before-{new_id}").iterdir()) == before
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000001"]
    trainer = json.loads((run / "checkpoints" / "step_00000001" / "trainer.json").read_text())
    assert trainer["run_id"] == new_id
    result = _sft_cli(data_dir, run, "max_steps=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resumed from {run / 'checkpoints' / 'step_00000001'} at step 1" in result.stdout


def test_training_into_a_users_directory_is_refused_unless_overwrite(data_dir, tmp_path):
    mine = tmp_path / "mine"
    (mine / "final").mkdir(parents=True)
    (mine / "final" / "important.txt").write_text("keep me")
    (mine / "config.yaml").write_text("mine: true\n")
    (mine / "metrics.jsonl").write_text("my notes\n")
    line = _one_line_error(_sft_cli(data_dir, mine, "max_steps=1"))
    assert f"{mine} is not empty and is not this run's" in line and "overwrite=true" in line
    assert (mine / "final" / "important.txt").read_text() == "keep me"
    assert (mine / "config.yaml").read_text() == "mine: true\n"
    assert (mine / "metrics.jsonl").read_text() == "my notes\n"
    assert not (mine / ".lock").exists()
    result = _sft_cli(data_dir, mine, "max_steps=1", "overwrite=true")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (mine / "final" / "model.safetensors").is_file()
    assert not (mine / "final" / "important.txt").exists()
    (tmp_path / "a-file").write_text("keep me")
    line = _one_line_error(_sft_cli(data_dir, tmp_path / "a-file", "max_steps=1"))
    assert "is a file, not a directory" in line
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_a_full_disk_during_an_export_is_one_line_and_leaves_no_tmp(finished_run, tmp_path,
                                                                    monkeypatch, capsys):
    """safetensors reports a full disk as a SafetensorError around the OS error."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    from redi.train.cli import export_main

    def full(state, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: '
                              'StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "out"
    status = export_main(["--checkpoint", str(finished_run / "checkpoints" / "step_00000002"),
                          "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"redi export: no space left on the device at " \
                                            f"{out} (model not exported; free space and rerun)"
    assert list(tmp_path.iterdir()) == []


def test_dpo_reference_cache_follows_the_models_contents(data_dir, sft_export, tmp_path):
    """init_from retrained to the same path: the cached reference of the old model is not
    served (with reference = policy, DPO's first loss is log 2)."""
    import math

    from safetensors.torch import load_file, save_file

    init = tmp_path / "init"
    shutil.copytree(sft_export, init)
    stage2(data_dir, init, tmp_path / "old", "loss=dpo", "beta=1.0", "max_steps=1")
    weights = load_file(init / "model.safetensors")
    save_file({k: v * 1.5 for k, v in weights.items()}, init / "model.safetensors",
              metadata={"format": "pt"})
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(tmp_path / "old" / "reference_logps.safetensors", new)
    stage2(data_dir, init, new, "loss=dpo", "beta=1.0", "max_steps=1")
    assert json.loads((new / "metrics.jsonl").read_text())["loss"] == pytest.approx(
        math.log(2), abs=1e-5)


def test_dpo_reference_fingerprint_is_the_data_not_its_paths(tmp_path, sft_export):
    """The same built-in data prepared in two directories (its pairs.jsonl names the path of
    its raw.jsonl) gets one fingerprint, so the reference cache is shared."""
    from redi.data.formatting import Formatter
    from redi.data.prepare import PrepareOptions, prepare_builtin_task
    from redi.data.tokenizer import load_tokenizer
    from redi.train.config import build_config
    from redi.train.distributed import init_distributed, shutdown
    from redi.train.loader import TrainData

    env = init_distributed()
    try:
        prints = []
        for name in ("a", "b"):
            directory = tmp_path / name
            prepare_builtin_task(directory, Formatter(load_tokenizer()), num_problems=40,
                                 num_test=5, options=PrepareOptions(progress=False))
            config = build_config(None, [f"data={directory}", f"init_from={sft_export}",
                                         "loss=dpo", f"output_dir={tmp_path / 'run'}",
                                         *COMMON])
            prints.append(TrainData(config, env).fingerprint)
    finally:
        shutdown()
    assert prints[0] == prints[1]


@pytest.mark.parametrize("run", [
    ["lora_r=4", "lora_target_modules=[q_proj,v_proj]"], ["loss=dpo"]], ids=["lora", "dpo"])
def test_resume_on_a_changed_base_model_is_refused(data_dir, sft_export, tmp_path, run):
    """LoRA keeps only the adapters in its checkpoints, DPO rebuilds its reference: resuming
    over another model at the same path would put the adapters on a base they were not
    trained with, or change DPO's reference mid-run. Refused before a reference is built."""
    from safetensors.torch import load_file, save_file

    init, out = tmp_path / "init", tmp_path / "run"
    shutil.copytree(sft_export, init)
    run = [*run, "max_steps=2", "save_every=1", "keep_last=5"]
    stage2(data_dir, init, out, *run)
    shutil.rmtree(out / "checkpoints" / "step_00000002")  # as if killed after step 1
    cache = out / "reference_logps.safetensors"
    before = cache.read_bytes() if cache.exists() else None
    weights = load_file(init / "model.safetensors")
    save_file({k: v * 1.5 for k, v in weights.items()}, init / "model.safetensors",
              metadata={"format": "pt"})
    line = _one_line_error(stage2(data_dir, init, out, *run, check=False))
    assert f"{init} is not the model" in line and "step_00000001" in line
    assert not (out / "checkpoints" / "step_00000002").exists()
    assert (cache.read_bytes() if cache.exists() else None) == before


def test_max_prompt_length_zero_is_no_limit_and_negative_is_refused():
    """0 means no limit, as for `redi prepare --max-prompt-length` (it cut every prompt
    away); a negative length is an error."""
    from redi.data.tokenizer import load_tokenizer
    from redi.train.config import ConfigError, build_config
    from redi.train.loader import make_formatter

    config = build_config(None, [*TINY_MODEL, "max_prompt_length=0"])
    assert make_formatter(config, load_tokenizer()).max_prompt_length is None
    with pytest.raises(ConfigError, match=r"^max_prompt_length must be >= 0 \(0: no limit\), "
                                          "got -5$"):
        build_config(None, [*TINY_MODEL, "max_prompt_length=-5"])


@pytest.mark.parametrize("damage", ["truncated", "short", "keyless"])
def test_an_unreadable_reference_cache_is_rebuilt_with_a_warning(tmp_path, capsys, damage):
    import torch
    from safetensors.torch import save_file

    from redi.train.distributed import init_distributed, shutdown
    from redi.train.reference import CACHE_FILE, CachedReference

    path, needed = tmp_path / CACHE_FILE, torch.tensor([0, 3])
    tables = {"truncated": {"logps": torch.zeros(4, 2)}, "short": {"logps": torch.zeros(2, 2)},
              "keyless": {"other": torch.zeros(4, 2)}}
    save_file(tables[damage], path, metadata={"fingerprint": "f"})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-8])
    init_distributed()
    try:
        assert CachedReference.load(tmp_path, "f", needed, num_pairs=4) is None
        save_file({"logps": torch.zeros(4, 2)}, path, metadata={"fingerprint": "f"})
        assert CachedReference.load(tmp_path, "f", needed, num_pairs=4) is not None
    finally:
        shutdown()
    err = capsys.readouterr().err
    assert err.startswith(f"redi: warning: {path} ") and err.endswith("; it is rebuilt\n")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("override,message", [
    ("weight_decay=-1", "weight_decay must be >= 0, got -1.0"),
    ("adam_beta1=1.5", "adam_beta1 must be in [0, 1), got 1.5"),
    ("adam_beta2=-0.1", "adam_beta2 must be in [0, 1), got -0.1"),
    ("adam_eps=-1", "adam_eps must be > 0, got -1.0"),
])
def test_optimizer_keys_are_checked_with_the_others(override, message):
    from redi.train.config import ConfigError, build_config

    with pytest.raises(ConfigError) as err:
        build_config(None, [*TINY_MODEL, override])
    assert str(err.value) == message


def test_a_recipe_with_a_yaml_syntax_error_is_one_line_with_its_position(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("loss: redi\nlr: [1e-6\nmax_steps: 2\n")
    result = run_cli(["train", "--config", recipe, f"output_dir={tmp_path / 'run'}"])
    line = _one_line_error(result)
    assert line.startswith(f"redi train: recipe {recipe}:3:10: not valid YAML (")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
