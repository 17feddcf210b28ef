"""Reading a distributed checkpoint without running code from it.

torch's ``FileSystemReader`` reads a checkpoint's ``.metadata`` with ``pickle.load``, which
runs whatever a crafted file asks for. ``SafeFileSystemReader`` reads it with an unpickler
that builds only what that metadata is made of (the dataclasses of
``torch.distributed.checkpoint``, ``torch.Size``, dtypes, layouts, memory formats, paths
and builtin containers) and refuses anything else before it is called. The shards
(``*.distcp``) are read as tensors (``torch.load(weights_only=True)``) or raw bytes.
"""

from __future__ import annotations

import pickle

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

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


class UnsafeMetadata(pickle.UnpicklingError):
    """A checkpoint metadata file that asks for something a checkpoint is not made of."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_VALUES):
            return getattr(torch, name)
        if (module, name) not in _ALLOWED:
            raise UnsafeMetadata(f"it refers to {module}.{name}, which no checkpoint "
                                 "metadata contains")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """A ``FileSystemReader`` whose ``read_metadata`` admits only checkpoint metadata
    (raises ``UnsafeMetadata`` otherwise; the refused payload is never called)."""

    def read_metadata(self, *args, **kwargs) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            try:
                metadata = _MetadataUnpickler(f).load()
            except UnsafeMetadata as err:
                raise UnsafeMetadata(f"{path} is not a checkpoint's metadata: {err}") from None
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError,
                    TypeError) as err:
                raise UnsafeMetadata(f"{path} is unreadable ({type(err).__name__}: "
                                     f"{err})") from None
        if not isinstance(metadata, Metadata):
            raise UnsafeMetadata(f"{path} holds a {type(metadata).__name__}, not checkpoint "
                                 "metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata
