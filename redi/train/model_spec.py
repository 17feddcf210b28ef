"""The Hugging Face config of the model a run trains, and the checks made on it before the
model is built.

* ``model_config`` (a model built from scratch) and ``model_overrides`` (changes to a loaded
  model's config, e.g. the paper's long-context ``max_position_embeddings: 32768`` and
  ``rope_theta: 300000`` for Qwen2.5-Math-1.5B) may only name keys of the model type's
  config class; a typo is a one-line error with the closest valid key.
* The overrides are set on the config before the weights load, so they are part of the
  model, of the exported config.json, and of every run that starts from that export.
* Before training: the vocabulary must cover the tokenizer, and no sequence may be longer
  than ``max_position_embeddings`` (positions past it would be silently extrapolated).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from redi.train.config_error import ConfigError

if TYPE_CHECKING:  # for annotations only: config imports this module when it checks a recipe
    from redi.train.config import TrainConfig

DEFAULT_MODEL_TYPE = "qwen2"


def _rope(hf_config) -> dict:
    """The rope settings (transformers 5 keeps ``rope_theta`` in ``rope_parameters``)."""
    rope = getattr(hf_config, "rope_parameters", None)
    return rope if isinstance(rope, dict) else {}


def _valid_keys(hf_config) -> set[str]:
    return (set(hf_config.to_dict()) | set(getattr(hf_config, "attribute_map", {})) |
            set(_rope(hf_config)))


def set_value(hf_config, key: str, value) -> None:
    """Set one setting; a rope setting goes into ``rope_parameters`` where it lives."""
    if key in _rope(hf_config) and key not in hf_config.to_dict():
        hf_config.rope_parameters = {**_rope(hf_config), key: value}
    else:
        setattr(hf_config, key, value)


def check_keys(hf_config, keys, setting: str) -> None:
    """Every key must be a setting of ``hf_config``'s class (``setting`` names the key)."""
    valid = _valid_keys(hf_config)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, sorted(valid), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{setting}.{key} is not a setting of a {hf_config.model_type} "
                              f"config ({type(hf_config).__name__}){hint}")


def scratch_config(spec: dict):
    """The config of a model built from ``model_config`` (keys checked)."""
    from transformers import AutoConfig

    spec = dict(spec)
    model_type = spec.pop("model_type", DEFAULT_MODEL_TYPE)
    try:
        base = AutoConfig.for_model(model_type)
    except ValueError as err:
        raise ConfigError(f"model_config.model_type: unknown model type {model_type!r}") from err
    check_keys(base, spec, "model_config")
    return AutoConfig.for_model(model_type, **spec)


def model_source(config: TrainConfig) -> str | None:
    return config.init_from or config.model


def hf_config(config: TrainConfig):
    """The config the run's model gets: ``model_config``, or the source directory's
    config.json with ``model_overrides`` applied."""
    from transformers import AutoConfig

    source = model_source(config)
    if source is None:
        return scratch_config(config.model_config or {})
    if not Path(source, "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face model directory "
                                "(no config.json)")
    loaded = AutoConfig.from_pretrained(source, local_files_only=True)
    overrides = config.model_overrides or {}
    check_keys(loaded, overrides, "model_overrides")
    for key, value in overrides.items():
        set_value(loaded, key, value)
    return loaded


def check_vocabulary(hf, tokenizer) -> None:
    """The model's vocabulary covers every token id of the tokenizer."""
    vocab = getattr(hf, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ConfigError(f"the model's vocab_size {vocab} is smaller than the tokenizer's "
                          f"{len(tokenizer)} tokens: set a vocab_size >= {len(tokenizer)}")


def check_positions(hf, longest_sequence: int) -> None:
    """The longest training sequence fits the model's positions."""
    positions = getattr(hf, "max_position_embeddings", None)
    if positions is not None and longest_sequence > positions:
        raise ConfigError(
            f"the longest training sequence has {longest_sequence} tokens, more than the "
            f"model's max_position_embeddings {positions}: lower max_length or raise it with "
            "model_overrides.max_position_embeddings (and rope_theta)")
