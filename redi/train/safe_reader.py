"""Reading a distributed checkpoint without running code from it.

torch's ``FileSystemReader`` reads a checkpoint's ``.metadata`` with ``pickle.load``, and
its ``DefaultLoadPlanner`` reads every item the metadata declares as bytes (the optimizer's
param groups, or any key a crafted ``.metadata`` re-declares) with
``torch.load(weights_only=False)``: both run whatever a crafted file asks for, and a
manifest does not help, since whoever crafts a checkpoint recomputes it.

* ``SafeFileSystemReader`` reads ``.metadata`` with an unpickler that builds only what that
  metadata is made of (the dataclasses of ``torch.distributed.checkpoint``, ``torch.Size``,
  dtypes, layouts, memory formats, paths and builtin containers) and refuses anything else
  before it is called; the shards it names must be files of the checkpoint directory.
* ``SafeLoadPlanner`` refuses a bytes item for a key this run holds as a tensor, and reads
  the others with ``torch.load(weights_only=True)`` from the ``torch.save`` archive DCP
  writes. Tensors are read by torch's reader with ``weights_only=True``.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

_METADATA = "torch.distributed.checkpoint.metadata"
# Every global a torch checkpoint's metadata pickle refers to (torch 2.x), and nothing else.
_ALLOWED = {
    *((_METADATA, name) for name in (
        "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
        "BytesStorageMetadata", "ChunkStorageMetadata", "_MEM_FORMAT_ENCODING")),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # a layout by name
    ("torch", "Size"), ("collections", "OrderedDict"),
    # StorageMeta.checkpoint_id (pathlib._local from Python 3.13)
    *((module, name) for module in ("pathlib", "pathlib._local")
      for name in ("PosixPath", "PurePosixPath")),
}
_TORCH_VALUES = (torch.dtype, torch.layout, torch.memory_format)


class UnsafeCheckpoint(pickle.UnpicklingError):
    """A checkpoint file that asks for something a checkpoint is not made of."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_VALUES):
            return getattr(torch, name)
        if (module, name) not in _ALLOWED:
            raise UnsafeCheckpoint(f"it refers to {module}.{name}, which no checkpoint "
                                   "metadata contains")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """A ``FileSystemReader`` whose ``read_metadata`` admits only checkpoint metadata
    (raises ``UnsafeCheckpoint`` otherwise; the refused payload is never called)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            try:
                metadata = _MetadataUnpickler(f).load()
            except UnsafeCheckpoint as err:
                raise UnsafeCheckpoint(f"{path} is not a checkpoint's metadata: {err}") from None
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError,
                    TypeError) as err:
                raise UnsafeCheckpoint(f"{path} is unreadable ({type(err).__name__}: "
                                       f"{err})") from None
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpoint(f"{path} holds a {type(metadata).__name__}, not checkpoint "
                                   "metadata")
        storage = metadata.storage_data if isinstance(metadata.storage_data, dict) else {}
        for info in storage.values():  # shards are files of this directory (and its manifest)
            name = getattr(info, "relative_path", None)
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise UnsafeCheckpoint(f"{path} names a shard outside the checkpoint "
                                       f"directory ({name!r})")
        self._check_shard_sizes(path, storage.values())
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def _check_shard_sizes(self, metadata_path, storage) -> None:
        """Every shard the metadata names exists and is as long as its items need: a
        missing or truncated shard is named here (ValueError), not met as an EOFError
        inside DCP."""
        needed: dict[str, int] = {}
        for info in storage:
            end = getattr(info, "offset", 0) + getattr(info, "length", 0)
            needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
        for name, end in sorted(needed.items()):
            shard = Path(self.path) / name
            if not shard.is_file():
                raise ValueError(f"{metadata_path} names the shard {name}, which is missing")
            size = shard.stat().st_size
            if size < end:
                raise ValueError(f"shard {shard} is truncated: {size} bytes, its items need "
                                 f"{end}")


class SafeLoadPlanner(DefaultLoadPlanner):
    """A ``DefaultLoadPlanner`` that unpickles no code (raises ``UnsafeCheckpoint``; the
    refused payload is never called): a key this run holds as a tensor must be stored as
    one, and a bytes item is read with ``torch.load(weights_only=True)`` and must be of
    the type this run holds there (an lr stays a float)."""

    def create_local_plan(self) -> LoadPlan:
        plan = super().create_local_plan()
        for item in plan.items:
            fqn = item.dest_index.fqn
            if item.type == LoadItemType.BYTE_IO and isinstance(self.state_dict.get(fqn),
                                                                 torch.Tensor):
                raise UnsafeCheckpoint(f"{fqn}: .metadata stores it as a pickled object, but "
                                       "it is a tensor")
        return plan

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        fqn = read_item.dest_index.fqn
        shard = self.metadata.storage_data[read_item.storage_index].relative_path
        where = f"{shard}: {fqn}"
        obj = _plain_value(value, where)
        held = type(self.state_dict.get(fqn))
        if type(obj) is not held:
            raise UnsafeCheckpoint(f"{where} is a {type(obj).__name__}, not a {held.__name__} "
                                   "as in this run")
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def _plain_value(value: io.BytesIO, where: str):
    """A bytes item as ``torch.save`` wrote it (the only way DCP writes one), read with
    ``torch.load(weights_only=True)``; UnsafeCheckpoint naming the globals it refers to."""
    if not zipfile.is_zipfile(value):
        raise UnsafeCheckpoint(f"{where} is not an object torch.save wrote")
    value.seek(0)
    try:
        return torch.load(value, weights_only=True)
    except pickle.UnpicklingError:
        value.seek(0)
        try:
            unsafe = ", ".join(sorted(torch.serialization.get_unsafe_globals_in_checkpoint(value)))
        except (ValueError, EOFError, RuntimeError):  # read statically; a garbled pickle
            unsafe = ""
        raise UnsafeCheckpoint(f"{where} refers to {unsafe or 'a global'}, which no checkpoint "
                               "value contains") from None
