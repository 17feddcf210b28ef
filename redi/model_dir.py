"""What a Hugging Face model directory must hold before it is loaded: ``config.json`` and
its weights (``model.safetensors``, ``pytorch_model.bin``, or a sharded index with every
shard it names). A missing piece is one line naming the directory and the file, where
transformers would show a traceback.

``model_fingerprint`` names a model directory by its contents, so that what was computed
from a model (DPO's cached reference, evaluation samples, a LoRA run's frozen base) is
never reused for another model written to the same path.

An exported model directory also records how its training data worded problems
(``training_prompt.json``): training writes it, ``redi eval`` reads it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from redi.files import sha256_of

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
EXPORT_MARKER = "redi_export.json"  # written by redi export (redi.train.export_dir)
TRAINING_PROMPT_FILE = "training_prompt.json"


class ModelDirError(FileNotFoundError):
    """A model directory that cannot be loaded."""


def check_model_dir(path: str | Path) -> None:
    path = Path(path)
    if not path.is_dir():
        raise ModelDirError(f"{path}: no such model directory")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{path} is not a Hugging Face model directory (no config.json)")
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return
    for name in WEIGHT_FILES:
        index = path / f"{name}.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise ModelDirError(f"{index} is unreadable ({err})") from None
            missing = sorted(s for s in shards if not (path / s).is_file())
            if missing:
                raise ModelDirError(f"{path} lacks weight shards named in {index.name}: "
                                    f"{', '.join(missing[:3])}")
            return
    raise ModelDirError(f"{path} holds no weights ({' or '.join(WEIGHT_FILES)}, or a "
                        "sharded index)")


def model_fingerprint(path: str | Path) -> str:
    """sha256 over the names and contents of the model directory's files (weights, config,
    tokenizer, generation settings): the same for a copy elsewhere, another for a model
    retrained to the same path. Hidden files (caches, locks) and the export marker (it
    names the checkpoint the export came from) are left out; a model directory is flat."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name != EXPORT_MARKER)
    listing = "".join(f"{p.name}\0{sha256_of(p)}\n" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def write_training_prompt(model_dir: str | Path, prompt_style: str, think: bool) -> None:
    """Record, in an exported model directory, how its training data worded problems."""
    from redi.files import atomic_write_text

    record = {"prompt_style": prompt_style, "think": think}
    atomic_write_text(Path(model_dir) / TRAINING_PROMPT_FILE, json.dumps(record) + "\n")


def read_training_prompt(model_dir: str | Path) -> dict | None:
    path = Path(model_dir) / TRAINING_PROMPT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        return {"prompt_style": str(record["prompt_style"]), "think": bool(record["think"])}
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a training prompt record ({err})") from err
