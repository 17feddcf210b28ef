"""Checkpoint faults (issues 16, 29): a crafted ``.metadata`` or shard item never runs code,
damaged checkpoints are found by their manifest (resume falls back to the newest intact one),
a full disk is a one-line error that leaves no ``.tmp``, and corrupt files are one-line errors."""

import errno
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

from redi.train import checkpoint as ckpt
from redi.train import manifest
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


def recompute_manifest(path: Path) -> None:
    """As whoever edits a checkpoint would: the manifest proves integrity, not trust."""
    manifest.write_manifest(path, manifest.digests(path, manifest.checkpoint_files(path)))


def craft_pickled_item(path: Path, key: str, value) -> None:
    """Rewrite checkpoint ``path`` as an attacker would: ``key`` becomes a pickled (bytes)
    item holding ``value`` (e.g. a ``_Payload``), appended to a shard as ``torch.save``
    writes it; ``.metadata`` (only classes the safe reader allows) and the manifest are
    rewritten to match."""
    from redi.train.safe_reader import SafeFileSystemReader

    metadata = SafeFileSystemReader(str(path)).read_metadata()
    payload = io.BytesIO()
    torch.save(value, payload)
    shard = _shard(path)
    offset = shard.stat().st_size
    with shard.open("ab") as f:
        f.write(payload.getvalue())
    metadata.state_dict_metadata[key] = BytesStorageMetadata()
    metadata.storage_data = {index: info for index, info in metadata.storage_data.items()
                             if index.fqn != key}
    metadata.storage_data[MetadataIndex(key)] = _StorageInfo(shard.name, offset,
                                                             len(payload.getvalue()))
    (path / ".metadata").write_bytes(pickle.dumps(metadata))
    recompute_manifest(path)


@pytest.mark.parametrize("key", ["model.0.weight", "optim.param_groups.0.lr"])
def test_crafted_shard_item_is_refused_and_never_runs(group, tmp_path, key):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    marker = tmp_path / "payload-ran"
    craft_pickled_item(path, key, _Payload(marker))
    assert ckpt.checkpoint_problem(path) is None  # the manifest proves integrity, not trust
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model, optimizer)
    message = str(err.value)
    assert not marker.exists()
    assert message.startswith(f"refused checkpoint {path}: ") and "\n" not in message
    assert key in message
    if key.startswith("model."):
        assert ".metadata stores it as a pickled object, but it is a tensor" in message
    else:
        assert f"{_shard(path).name}" in message and "posix.system" in message


def test_a_pickled_value_of_another_type_is_refused(group, tmp_path):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    craft_pickled_item(path, "optim.param_groups.0.lr", "0.01")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model, optimizer)
    assert str(err.value) == (f"refused checkpoint {path}: {_shard(path).name}: "
                              "optim.param_groups.0.lr is a str, not a float as in this run")


def test_a_shard_outside_the_checkpoint_is_refused(group, tmp_path):
    """A shard outside the directory would escape its manifest."""
    from redi.train.safe_reader import SafeFileSystemReader

    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    shutil.copy(_shard(path), tmp_path / "elsewhere.distcp")
    metadata = SafeFileSystemReader(str(path)).read_metadata()
    for info in metadata.storage_data.values():
        info.relative_path = "../../elsewhere.distcp"
    (path / ".metadata").write_bytes(pickle.dumps(metadata))
    recompute_manifest(path)
    with pytest.raises(CheckpointError, match=r"names a shard outside the checkpoint "
                                              r"directory \('../../elsewhere.distcp'\)"):
        load_checkpoint(path, model, optimizer)


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


@pytest.mark.parametrize("change", ["entry deleted", "file added"])
def test_the_manifest_covers_the_whole_directory(group, tmp_path, change):
    """A file the manifest does not list is never checked: it marks the checkpoint damaged."""
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    entries = manifest.read_manifest(path)
    if change == "entry deleted":  # and then a bit flipped in that shard
        shard = _shard(path)
        del entries[shard.name]
        manifest.write_manifest(path, entries)
        data = bytearray(shard.read_bytes())
        data[-8] ^= 1
        shard.write_bytes(bytes(data))
        unlisted = shard.name
    else:
        unlisted = "__1_0.distcp"
        shutil.copy(_shard(path), path / unlisted)
    assert ckpt.checkpoint_problem(path) == f"{unlisted} is not listed in manifest.json"


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
    assert "\n" not in str(err.value) and str(target) in str(err.value)


def test_a_missing_shard_without_manifest_is_named(group, tmp_path):
    """DCP reports only which ranks failed; the error names the rank's own failure."""
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    (path / "manifest.json").unlink()
    shard = _shard(path)
    shard.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model)
    assert str(err.value) == (f"checkpoint {path} is unreadable (ValueError: {path}/.metadata "
                              f"names the shard {shard.name}, which is missing)")


@pytest.mark.parametrize("state,message", [
    ({"sampler": {}}, "must hold 'rng' and 'sampler' dicts"),
    ({"rng": {"torch": "x", "python": None}, "sampler": {}}, "its RNG state cannot be restored"),
])
def test_a_hand_edited_rank_state_is_one_line_naming_the_file(group, tmp_path, state, message):
    model, optimizer = _model()
    path = _save(tmp_path, 1, model, optimizer)
    (path / "manifest.json").unlink()
    torch.save(state, path / "rank0.pt")
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path, model, optimizer)
    assert "\n" not in str(err.value) and str(path / "rank0.pt") in str(err.value)


def edit_trainer_json(path: Path, key: str, value) -> None:
    """Set ``key`` (``a.b`` for a nested one; value ``...`` deletes it) in checkpoint
    ``path``'s trainer.json, and recompute the manifest."""
    meta = json.loads((path / "trainer.json").read_text())
    *parents, last = key.split(".")
    target = meta
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    (path / "trainer.json").write_text(json.dumps(meta))
    recompute_manifest(path)


@pytest.mark.parametrize("key,value,problem", [
    ("tokens_seen", "100", "tokens_seen is '100', not a whole number >= 0"),
    ("tokens_seen", -5, "tokens_seen is -5, not a whole number >= 0"),
    ("tokens_seen", ..., "tokens_seen is missing"),
    ("step", 1.5, "step is 1.5, not a whole number >= 0"),
    ("world_size", True, "world_size is True, not a whole number >= 1"),
    ("scheduler.last_epoch", "1", "scheduler.last_epoch is '1', not a whole number >= 0"),
    ("scheduler.last_epoch", 7, "scheduler.last_epoch is 7, not the step (0)"),
    ("scheduler.base_lrs", [float("nan")], "scheduler.base_lrs.0 is nan, not a finite number "
                                           ">= 0"),
    ("scheduler.base_lrs", [], "scheduler.base_lrs is [], not a list of 1"),
    ("scheduler.optimizer", None, "scheduler.optimizer is not a key of this run's scheduler"),
    ("scheduler", [], "scheduler is [], not a mapping"),
])
def test_a_hand_edited_trainer_json_is_one_line_naming_the_key(group, tmp_path, key, value,
                                                                problem):
    model, optimizer = _model()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # at step 0
    state = {"scheduler": scheduler.state_dict(), "tokens_seen": 100, "loss": "sft"}
    path = save_checkpoint(tmp_path, 0, model, optimizer, state, {"position": 0}, 5, run_id="run")
    edit_trainer_json(path, key, value)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, model, optimizer, scheduler)
    assert str(err.value) == f"{path / 'trainer.json'}: {problem}"


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
