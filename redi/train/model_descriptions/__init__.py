"""Config-only descriptions of the models the recipes name (a config.json's content, no
weights), selected by name: ``redi plan`` counts a model from one when its weights are not on
this machine (``model_description: NAME`` in a recipe), and ``model_config: NAME`` builds a
random-weight model of that shape (rehearsals, tests).

Each file is the stock config.json of the Hugging Face repository it is named after (no
network here: read from copies of it, named below, that agree on every shape key):

* ``qwen2.5-math-1.5b``: Qwen/Qwen2.5-Math-1.5B (huggingface.co/mlx-community/
  Qwen2.5-Math-1.5B-bf16/blob/c4eab3a/config.json; the "base" column of
  huggingface.co/waleko/Qwen2.5-Math-1.5B-RoPE-300k), the paper's model. Stock 4096 positions and
  rope_theta 10000; the paper's SFT edits them to 32768 and 300000 before training, which
  recipes/qwen2.5-math-1.5b_sft.yaml does with ``model_overrides`` (the description keeps
  the stock values);
* ``qwen2.5-0.5b``: Qwen/Qwen2.5-0.5B (its "model config" as quoted in public model notes;
  huggingface.co/osllmai-community/Qwen2.5-0.5B/blob/main/config.json), a smaller neighbour
  (32768 positions, rope_theta 1e6);
* ``qwen2.5-math-7b``: Qwen/Qwen2.5-Math-7B (huggingface.co/nvidia/AceMath-7B-Instruct/blob/
  a2b4688/config.json, unchanged from it; huggingface.co/unsloth/Qwen2.5-Math-7B), a larger
  neighbour (vocab_size 152064, an untied LM head).
"""

from __future__ import annotations

import json
from importlib.resources import files

from redi.train.config import ConfigError

_FILES = files(__name__)
NAMES = tuple(sorted(p.name.removesuffix(".json") for p in _FILES.iterdir()
                     if p.name.endswith(".json")))


def load(name: str) -> dict:
    """The description ``name`` (a fresh dict); an unknown name is a one-line ConfigError
    that lists the shipped ones."""
    if name not in NAMES:
        raise ConfigError(f"no shipped model description {name!r}; the shipped ones are: "
                          f"{', '.join(NAMES)}")
    return json.loads(_FILES.joinpath(f"{name}.json").read_text())
