"""The Hugging Face config of the model a run trains, and the checks made on it before the
model is built.

* ``model_config`` (a model built from scratch; ``name`` starts it from a shipped description,
  ``redi.train.model_descriptions``) and ``model_overrides`` (changes to a loaded
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
import json
from pathlib import Path
from typing import TYPE_CHECKING

from redi.model_dir import model_fingerprint
from redi.train import model_descriptions
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
    """The config of a model built from ``model_config`` (keys checked): the shipped
    description ``spec["name"]`` (if given) with the other keys set over it."""
    from transformers import AutoConfig

    spec = dict(spec)
    described = model_descriptions.load(spec.pop("name")) if "name" in spec else {}
    model_type = spec.pop("model_type", described.pop("model_type", DEFAULT_MODEL_TYPE))
    try:
        base = AutoConfig.for_model(model_type)
    except ValueError as err:
        raise ConfigError(f"model_config.model_type: unknown model type {model_type!r}") from err
    check_keys(base, spec, "model_config")
    return AutoConfig.for_model(model_type, **{**described, **spec})


def _overridden(loaded, overrides: dict | None):
    """``loaded`` with ``model_overrides`` set on it (keys checked)."""
    overrides = overrides or {}
    check_keys(loaded, overrides, "model_overrides")
    for key, value in overrides.items():
        set_value(loaded, key, value)
    return loaded


def described_config(config: TrainConfig):
    """The config of ``model_description`` (the shipped description of the model that
    ``model``/``init_from`` name) with ``model_overrides``: what ``redi plan`` counts when
    those weights are not on this machine."""
    return _overridden(scratch_config({"name": config.model_description}),
                       config.model_overrides)


def model_source(config: TrainConfig) -> str | None:
    return config.init_from or config.model


def model_identity(config: TrainConfig) -> str:
    """The model a run starts from, by content: the source directory's files
    (``model_fingerprint``, never its path) with the overrides set on its config, or a
    scratch model's config and seed. Reads every file of the directory once."""
    source = model_source(config)
    if source is None:
        return f"{json.dumps(config.model_config, sort_keys=True)}:seed={config.seed}"
    return f"{model_fingerprint(source)}:{json.dumps(config.model_overrides, sort_keys=True)}"


def hf_config(config: TrainConfig):
    """The config the run's model gets: ``model_config``, or the source directory's
    config.json with ``model_overrides`` applied."""
    from transformers import AutoConfig

    source = model_source(config)
    if source is None and not config.model_config:
        raise ConfigError(f"no model to train: set model (a local HF directory), init_from or "
                          f"model_config (model_description {config.model_description!r} "
                          "only tells redi plan the model's shape)")
    if source is None:
        return scratch_config(config.model_config)
    if not Path(source, "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a Hugging Face model directory "
                                "(no config.json)")
    return _overridden(AutoConfig.from_pretrained(source, local_files_only=True),
                       config.model_overrides)


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
