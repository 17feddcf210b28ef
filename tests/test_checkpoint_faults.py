"""Checkpoint faults (issue 16): a crafted ``.metadata`` never runs code, damaged checkpoints
are found by their manifest (resume falls back to the newest intact one), a full disk is a
one-line error that leaves no ``.tmp``, and corrupt files are one-line errors."""

import errno
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from redi.train import checkpoint as ckpt
from redi.train.checkpoint import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint
from redi.train.distributed import init_distributed, shutdown


@pytest.fixture()
def group():
    init_distributed()
    yield
    shutdown()


def _model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(out, step, model, optimizer, keep_last=5, run_id="run"):
    return save_checkpoint(out, step, model, optimizer, {"loss": "sft"}, {"position": step},
                           keep_last, run_id=run_id)


def _shard(path: Path) -> Path:
    return next(path.glob("*.distcp"))


class _Payload:
    """Unpickling this creates the file named by its argument."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_crafted_metadata_is_refused_and_never_runs(group, tmp_path):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    marker = tmp_path / "payload-ran"
    (path / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    (path / "manifest.json").unlink()  # a crafted directory need not carry a manifest
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model)
    assert "is not a checkpoint's metadata" in str(err.value)
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_real_metadata_loads_through_the_safe_reader(group, tmp_path):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    load_checkpoint(path, fresh)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_damaged_newest_checkpoint_falls_back_with_a_warning(group, tmp_path, capsys):
    model, optimizer = _model()
    older = _save(tmp_path, 1, model, optimizer)
    newest = _save(tmp_path, 2, model, optimizer)
    shard = _shard(newest)
    data = bytearray(shard.read_bytes())
    data[-64:] = b"\xff" * 64  # a few bytes overwritten in place: same size
    shard.write_bytes(bytes(data))
    assert resolve_resume("auto", tmp_path, "run") == older
    warning = capsys.readouterr().err
    assert str(newest) in warning and str(older) in warning and "damaged" in warning
    with pytest.raises(CheckpointError, match="is damaged .*newest intact one is"):
        resolve_resume(str(newest), tmp_path, "run")


def test_no_intact_checkpoint_is_an_error(group, tmp_path):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    (path / "rank0.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        resolve_resume("auto", tmp_path, "run")


@pytest.mark.parametrize("where", ["dcp", "torch.save"])
def test_full_disk_is_one_line_and_leaves_no_tmp(group, tmp_path, monkeypatch, where):
    model, optimizer = _model()

    def full(*args, **kwargs):
        if where == "dcp":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 448 "
                           "vs 342")

    monkeypatch.setattr(ckpt.dcp if where == "dcp" else ckpt.torch, "save", full)
    with pytest.raises(CheckpointError) as err:
        _save(tmp_path, 3, model, optimizer)
    assert str(err.value).startswith(f"no space left on the device at {tmp_path / 'checkpoints'}")
    assert list((tmp_path / "checkpoints").iterdir()) == []


@pytest.mark.parametrize("damage", ["trainer.json", "rank0.pt", "shard"])
def test_corrupt_files_without_manifest_are_one_line_errors(group, tmp_path, damage):
    """Checkpoints from before manifests: damage shows up at load, as one line."""
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    (path / "manifest.json").unlink()
    target = _shard(path) if damage == "shard" else path / damage
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 3])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model, optimizer)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_resave_of_a_step_keeps_one_copy(group, tmp_path):
    model, optimizer = _model()
    _save(tmp_path, 1, model, optimizer)
    path = _save(tmp_path, 1, model, optimizer)
    assert ckpt.checkpoint_problem(path) is None
    shutil.rmtree(path)


def test_replace_dir_never_replaces_a_directory_holding_checkpoints(tmp_path):
    from redi.files import replace_dir

    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000001").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(FileExistsError, match="holds training checkpoints"):
        replace_dir(new, run)
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints").is_dir()


def test_resume_and_keep_last_see_only_the_runs_own_checkpoints(group, tmp_path):
    """A new run in a directory that still holds an older run's later steps: keep_last never
    deletes the new run's newest checkpoint, and resume never picks the older run's."""
    model, optimizer = _model()
    for step in (6, 9, 12):
        _save(tmp_path, step, model, optimizer, run_id="old")
    for step in range(1, 6):
        newest = _save(tmp_path, step, model, optimizer, keep_last=2, run_id="new")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path, "new")] == [
        "step_00000004", "step_00000005"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path, "old")] == [
        "step_00000006", "step_00000009", "step_00000012"]
    assert resolve_resume("auto", tmp_path, "new") == newest
    assert resolve_resume("auto", tmp_path, "other") is None
