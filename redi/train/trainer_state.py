"""A checkpoint's ``trainer.json`` (step, process count, parameter shapes; to resume, the
scheduler state, token counter and loss), checked key by key before it is used.

The file is plain JSON that a person can edit. A key of the wrong type or value would
otherwise fail later in the loop with a traceback (``tokens_seen += ...``), or, worse,
be trained with (a scheduler ``last_epoch`` other than the step shifts the learning rate
schedule). ``TrainerStateError`` names the file and the key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TRAINER_JSON = "trainer.json"


class TrainerStateError(ValueError):
    """A ``trainer.json`` that a resume or an export cannot use."""


def _whole(least: int):
    def check(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= least
    return check


def _shapes(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(shape, list) and all(map(_whole(0), shape)) for shape in value.values())


# key: (check, what the value must be, needed only to resume)
_KEYS = {
    "step": (_whole(0), "a whole number >= 0", False),
    "world_size": (_whole(1), "a whole number >= 1", False),
    "parameter_shapes": (_shapes, "a mapping of parameter names to shapes", False),
    "tokens_seen": (_whole(0), "a whole number >= 0", True),
    "loss": (lambda value: isinstance(value, str), "a loss name", True),
    "scheduler": (lambda value: isinstance(value, dict), "a mapping", True),
}


def read_trainer_state(checkpoint: Path, resume: bool) -> dict:
    """``checkpoint/trainer.json``, with every key it needs (``resume``: also those a
    resumed run continues from) of the right type."""
    file = checkpoint / TRAINER_JSON
    try:
        meta = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainerStateError(f"{file} is not JSON ({err})") from None
    if not isinstance(meta, dict):
        raise TrainerStateError(f"{file} is not a JSON object")
    for key, (valid, what, to_resume) in _KEYS.items():
        if key not in meta:
            if resume or not to_resume:
                raise TrainerStateError(f"{file}: {key} is missing")
        elif not valid(meta[key]):
            raise TrainerStateError(f"{file}: {key} is {meta[key]!r}, not {what}")
    return meta


def check_scheduler_state(checkpoint: Path, meta: dict, live: dict) -> None:
    """TrainerStateError unless ``meta["scheduler"]`` fits this run's scheduler (whose
    ``state_dict()`` is ``live``): its keys, value types and lengths; numbers finite and
    >= 0; ``last_epoch`` the step (the scheduler steps once per optimizer step)."""
    problem = _value_problem("scheduler", meta["scheduler"], live)
    last_epoch = meta["scheduler"].get("last_epoch", meta["step"])
    if problem is None and last_epoch != meta["step"]:
        problem = f"scheduler.last_epoch is {last_epoch}, not the step ({meta['step']})"
    if problem is not None:
        raise TrainerStateError(f"{checkpoint / TRAINER_JSON}: {problem}")


def _value_problem(name: str, value, like) -> str | None:
    """What makes ``value`` unlike ``like`` (what this run's scheduler holds there); None
    if it is alike. A key ``like`` lacks is refused (loading it would set an attribute);
    one it has and ``value`` lacks keeps this run's value."""
    if isinstance(like, dict):
        if not isinstance(value, dict):
            return f"{name} is {value!r}, not a mapping"
        for key, item in value.items():
            if key not in like:
                return f"{name}.{key} is not a key of this run's scheduler"
            problem = _value_problem(f"{name}.{key}", item, like[key])
            if problem is not None:
                return problem
        return None
    if isinstance(like, (list, tuple)):
        if not isinstance(value, list) or len(value) != len(like):
            return f"{name} is {value!r}, not a list of {len(like)}"
        problems = (_value_problem(f"{name}.{i}", *pair) for i, pair in enumerate(zip(value, like)))
        return next((p for p in problems if p is not None), None)
    if like is None or isinstance(like, (bool, str)):
        if type(value) is type(like):
            return None
        return f"{name} is {value!r}, not {'null' if like is None else type(like).__name__}"
    if isinstance(like, int):
        return None if _whole(0)(value) else f"{name} is {value!r}, not a whole number >= 0"
    if (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0):
        return None
    return f"{name} is {value!r}, not a finite number >= 0"
