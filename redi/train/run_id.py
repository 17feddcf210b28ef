"""A training run's identity: a random ``run_id``, chosen when the run starts, written at the
top of ``output_dir/config.yaml`` and into every checkpoint's ``trainer.json``.

It tells a run's own checkpoints from another run's in the same directory, so that a resume
and ``keep_last`` never take or delete another run's (``redi.train.run_dir`` decides which
run a directory belongs to). The id belongs to the directory, not to the settings: a run's
``config.yaml`` used as a recipe starts a run of its own.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml

RUN_ID = "run_id"  # the key in config.yaml and trainer.json
RUN_CONFIG = "config.yaml"


def new_run_id() -> str:
    return uuid.uuid4().hex


def stored_run_id(output_dir: str | Path) -> str | None:
    """The id of the run whose ``config.yaml`` ``output_dir`` holds (None: no such file, or
    one that is not a redi run's: unreadable, or without an id)."""
    try:
        stored = yaml.safe_load((Path(output_dir) / RUN_CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    run_id = stored.get(RUN_ID) if isinstance(stored, dict) else None
    return run_id if isinstance(run_id, str) and run_id else None
