"""A run's settings across resumes: ``output_dir/config.yaml`` is written when the run
starts and kept as it is; a resume may change only the keys that do not change what is
trained (how long, how often to save or log, how fast to compute it)."""

from __future__ import annotations

import dataclasses

import yaml

from redi.train.config import ConfigError, TrainConfig

# Keys a resumed run may change: where and how long it runs, logs and checkpoints, and
# implementation choices that compute the same update, and model_description (only
# `redi plan` reads it).
RESUMABLE_KEYS = frozenset({
    "output_dir", "resume", "overwrite", "max_steps", "epochs", "save_every", "keep_last",
    "log_every", "tensorboard", "progress", "loss_backend", "loss_single_pass",
    "activation_checkpointing", "cpu_offload", "liger_patches", "attn_implementation",
    "model_description",
})


def changed_training_keys(stored_yaml: str, config: TrainConfig) -> list[str]:
    """The training keys whose value in ``config`` differs from the stored run config (a
    key the stored file lacks compares with its default)."""
    stored = yaml.safe_load(stored_yaml) or {}
    if not isinstance(stored, dict):
        raise ConfigError("the run's config.yaml is not a mapping of keys to values")
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                for f in dataclasses.fields(TrainConfig)}
    return [f"{key}: {stored.get(key, defaults[key])!r} -> {getattr(config, key)!r}"
            for key in defaults if key not in RESUMABLE_KEYS
            and stored.get(key, defaults[key]) != getattr(config, key)]
