"""Training configuration: one dataclass, filled from a YAML recipe and ``key=value`` overrides.

Defaults are the paper's (arXiv 2505.24850); ``docs/recipe.md`` says where each comes from
and where the project deliberately differs. The learning rate, batch, epochs, warmup,
``max_length`` and the DPO/SimPO ``beta`` depend on the loss: a key the recipe and the
overrides leave unset takes the paper's value for the run's loss (``LOSS_DEFAULTS``).
Unknown keys and values of the wrong type are errors that list what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from redi.functional import check_beta, check_redi_args
from redi.loss_defaults import REDI_ALPHA, REDI_CHOSEN_COEF, SIMPO_BETA, SIMPO_GAMMA
from redi.train.config_error import ConfigError
from redi.train.lora import check_lora_config
from redi.train.run_id import RUN_ID


@dataclass
class TrainConfig:
    # What to train, from what, on what.
    loss: str = "redi"  # redi | dpo | simpo (Stage 2); `redi sft` sets sft (Stage 1)
    model: str | None = None  # a local Hugging Face causal-LM directory ...
    # ... or a config to build one from scratch (``model_config: qwen2.5-math-1.5b``: a
    # shipped description, redi.train.model_descriptions, with random weights)
    model_config: dict | None = None
    # the shipped description of the model that model/init_from name: what `redi plan`
    # counts where those weights are not on disk (training needs the weights)
    model_description: str | None = None
    init_from: str | None = None  # Stage 2: the Stage-1 export (a HF directory)
    # changes to the loaded model's config (e.g. max_position_embeddings, rope_theta);
    # they are saved in the exported config.json, so Stage 2 inherits them
    model_overrides: dict | None = None
    tokenizer: str | None = None  # local tokenizer dir; default: the model's, else built-in
    data: str = "builtin"  # a `redi prepare` output dir, or "builtin" (the embedded task)
    output_dir: str = "runs/default"

    # Optimization: AdamW (0.9, 0.999, 1e-8), wd 1e-4, 10% warmup then linear decay to 0.
    # lr, global_batch_size, epochs, warmup_ratio, max_length: per loss (LOSS_DEFAULTS);
    # the values here are REDI's.
    lr: float = 1e-6
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_ratio: float = 0.1
    epochs: float = 1.0
    max_steps: int | None = None  # stop after this many optimizer steps
    global_batch_size: int = 32  # sequences (SFT) or pairs (Stage 2) per optimizer step
    micro_batch_size: int = 1  # per process and forward pass
    # prompt + response tokens. SFT cuts a longer sequence's end (the prompt stays whole);
    # Stage 2 cuts the prompt to max_prompt_length, then the whole sequence keeping its end
    max_length: int = 19800
    max_prompt_length: int = 800  # Stage 2 only; 0 = no limit (as `redi prepare`'s)
    grad_clip: float = 1.0

    # Loss hyperparameters (Stage 2).
    alpha: float = REDI_ALPHA  # REDI negative weight
    chosen_coef: float = REDI_CHOSEN_COEF  # REDI positive weight
    neg_reweight_gamma: float | None = None  # REDI optional negative reweighting
    # REDI, beyond the paper: floor tau in (0, 1) on the rejected tokens' probabilities, the
    # negative term sees max(lp_i, log tau) (redi.losses.FusedLinearREDILoss); null = off
    negative_floor: float | None = None
    beta: float | None = None  # DPO / SimPO; null = the loss's paper default (LOSS_DEFAULTS)
    gamma: float = SIMPO_GAMMA  # SimPO margin
    reference: str = "cached"  # DPO reference log-probs: cached (once, on disk) | online

    # LoRA (PEFT; redi.train.lora): only the adapters train. lora_r null = full fine-tuning.
    lora_r: int | None = None
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_target_modules: list | str = "all-linear"  # or module names, e.g. [q_proj, v_proj]
    export_adapter: bool = False  # export the adapter alone, not the merged model

    # System.
    dtype: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    packing: bool | str = "auto"  # padding-free batches: auto (with flash-attn) | true | false
    attn_implementation: str = "auto"  # auto | sdpa | flash_attention_2 | eager
    activation_checkpointing: bool = False
    cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy
    liger_patches: bool = True  # Liger-Kernel RMSNorm/RoPE/SwiGLU on GPU when installed
    loss_backend: str = "auto"  # fused-loss backend: auto | triton | torch
    # DPO, SimPO, reweighted REDI: gradients in one pass per pair (3 matmuls, not 4) at the
    # cost of three float32 [V, H] buffers; faster on CPU (see redi.losses)
    loss_single_pass: bool = False
    seed: int = 42

    # Checkpoints and logs.
    save_every: int = 0  # optimizer steps between checkpoints; 0 = only at the end
    keep_last: int = 2
    resume: str = "auto"  # auto (latest checkpoint in output_dir) | never | a checkpoint dir
    # start a new run in an output_dir that is not empty and not this run's own: another
    # run's checkpoints are moved aside, config.yaml, metrics.jsonl and final/ replaced
    overwrite: bool = False
    log_every: int = 1
    tensorboard: bool = False
    progress: bool = True


# The paper's settings per loss, for keys a recipe and the overrides leave unset.
_STAGE2 = {"global_batch_size": 32, "epochs": 1.0, "warmup_ratio": 0.1, "max_length": 19800}
LOSS_DEFAULTS = {
    "sft": {"lr": 5e-5, "global_batch_size": 128, "epochs": 5.0, "warmup_ratio": 0.1,
            "max_length": 32768},
    "redi": {"lr": 1e-6, **_STAGE2},
    "dpo": {"lr": 2e-7, "beta": 0.001, **_STAGE2},
    "simpo": {"lr": 5e-7, "beta": SIMPO_BETA, "gamma": SIMPO_GAMMA, **_STAGE2},
}
# What `describe` prints at the start of a run.
_LOSS_KEYS = {"sft": (), "redi": ("alpha", "chosen_coef", "neg_reweight_gamma",
                                  "negative_floor"),
              "dpo": ("beta", "reference"), "simpo": ("beta", "gamma")}
_DESCRIBED = ("lr", "global_batch_size", "micro_batch_size", "epochs", "max_steps",
              "warmup_ratio", "weight_decay", "max_length", "max_prompt_length")
_MAPPINGS = ("model_config", "model_overrides")

CHOICES = {
    "loss": ("sft", "redi", "dpo", "simpo"),
    "reference": ("cached", "online"),
    "dtype": ("auto", "bf16", "fp32"),
    "packing": ("auto", True, False),
    "attn_implementation": ("auto", "sdpa", "flash_attention_2", "eager"),
    "loss_backend": ("auto", "triton", "torch"),
}
_USER_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
_TYPES = typing.get_type_hints(TrainConfig)


def _check_type(key, value):
    expected = _TYPES[key]
    args = typing.get_args(expected)
    allowed = tuple(a for a in args if a is not type(None)) if args else (expected,)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{key} may not be null (expected {_type_name(expected)})")
    for t in allowed:
        if t is float and isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                continue
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, bool):
            continue
        if isinstance(value, t):
            return value
    raise ConfigError(f"{key} must be {_type_name(expected)}, got {value!r}")


def _type_name(t):
    args = [a.__name__ for a in typing.get_args(t) if a is not type(None)]
    base = " or ".join(args) if args else t.__name__
    return base + (" or null" if type(None) in typing.get_args(t) else "")


def _unknown(key):
    return ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(_USER_KEYS)}")


def load_yaml(text: str, where: str):
    """``yaml.safe_load`` of ``text``; a syntax error is one ConfigError line with its
    position, ``where:line:column`` (1-based), not PyYAML's multi-line report."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = ", ".join(str(x) for x in (err.problem, err.context) if x)
        raise ConfigError(f"{where}{position}: not valid YAML ({what})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({str(err).splitlines()[0]})") from None


def parse_override(text: str) -> tuple[str, object]:
    """``key=value`` with a YAML value: ``lr=1e-6``, ``max_steps=null``,
    ``model_config.hidden_size=64``."""
    if "=" not in text:
        raise ConfigError(f"overrides are key=value, got {text!r}")
    key, raw = text.split("=", 1)
    return key.strip(), load_yaml(raw, f"override {text!r}") if raw.strip() else ""


def _named(key: str, value):
    """``model_config: NAME`` is ``model_config: {name: NAME}`` (a shipped description)."""
    return {"name": value} if key == "model_config" and isinstance(value, str) else value


def build_config(recipe: str | Path | None = None, overrides: typing.Iterable[str] = (),
                 **forced) -> TrainConfig:
    """Recipe YAML, then ``key=value`` overrides, then ``forced`` keys set by the command."""
    values: dict = {}
    if recipe is not None:
        path = Path(recipe)
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist")
        try:
            text = path.read_text()
        except UnicodeDecodeError as err:
            raise ConfigError(f"recipe {path} is not UTF-8 text ({err})") from None
        loaded = load_yaml(text, f"recipe {path}") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path} must be a mapping of keys to values")
        loaded.pop(RUN_ID, None)  # a run's config.yaml as a recipe: its settings, not its id
        values.update(loaded)
    values = {key: _named(key, value) for key, value in values.items()}
    for text in overrides:
        key, value = parse_override(text)
        if "." in key:
            head, sub = key.split(".", 1)
            if head not in _MAPPINGS:
                raise _unknown(key)
            values[head] = {**(values.get(head) or {}), sub: value}
        else:
            values[key] = _named(key, value)
    values.update(forced)
    loss = values.get("loss", TrainConfig.loss)
    if loss in LOSS_DEFAULTS:
        values = {**LOSS_DEFAULTS[loss], **values}
    checked = {}
    for key, value in values.items():
        if key not in _USER_KEYS:
            raise _unknown(key)
        checked[key] = _check_type(key, value)
        if isinstance(checked[key], float) and not math.isfinite(checked[key]):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        if key in CHOICES and checked[key] not in CHOICES[key]:
            raise ConfigError(f"{key} must be one of {CHOICES[key]}, got {value!r}")
    config = TrainConfig(**checked)
    _check_consistency(config)
    return config


def _check_consistency(c: TrainConfig):
    if (c.model is not None or c.init_from is not None) and c.model_config is not None:
        which = "model" if c.model is not None else "init_from"
        raise ConfigError(f"model_config builds a model from scratch and cannot be combined "
                          f"with {which}; change a loaded model's config with model_overrides")
    if (c.model_overrides and c.model is None and c.init_from is None
            and c.model_description is None):
        raise ConfigError("model_overrides change a loaded model's config (model or "
                          "init_from); put the settings of a new model in model_config")
    for key in ("global_batch_size", "micro_batch_size", "max_length", "log_every"):
        if getattr(c, key) < 1:
            raise ConfigError(f"{key} must be >= 1, got {getattr(c, key)}")
    if c.max_prompt_length < 0:
        raise ConfigError(f"max_prompt_length must be >= 0 (0: no limit), got "
                          f"{c.max_prompt_length}")
    if c.max_steps is not None and c.max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1 or null, got {c.max_steps}")
    for key in ("warmup_ratio", "adam_beta1", "adam_beta2"):
        if not 0 <= getattr(c, key) < 1:
            raise ConfigError(f"{key} must be in [0, 1), got {getattr(c, key)}")
    for key in ("lr", "epochs", "grad_clip", "adam_eps"):
        if not getattr(c, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {getattr(c, key)}")
    if c.weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {c.weight_decay}")
    for key in ("save_every", "keep_last"):
        if getattr(c, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(c, key)}")
    if (c.model is None and c.init_from is None and not c.model_config
            and c.model_description is None):
        raise ConfigError("no model: set model (a local HF directory), init_from (a Stage-1 "
                          "export) or model_config (a model built from scratch)")
    if c.model_config is not None:
        from redi.train.model_spec import scratch_config

        scratch_config(c.model_config)  # raises on a key its config class does not have
    if c.model_description is not None:
        from redi.train import model_descriptions

        model_descriptions.load(c.model_description)  # raises on a name not shipped
    if c.negative_floor is not None and c.loss != "redi":
        raise ConfigError(f"negative_floor applies to loss redi only, got loss={c.loss} (set "
                          "negative_floor=null)")
    try:
        check_redi_args(c.alpha, c.chosen_coef, c.neg_reweight_gamma, c.negative_floor)
        if c.beta is not None:
            check_beta(c.beta)
        check_lora_config(c)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def describe(config: TrainConfig) -> str:
    """One line of the settings that shape the optimization (printed at the start)."""
    keys = [k for k in _DESCRIBED + _LOSS_KEYS[config.loss]
            if not (config.loss == "sft" and k == "max_prompt_length")]
    settings = " ".join(f"{k}={getattr(config, k)}" for k in keys)
    overrides = f" model_overrides={config.model_overrides}" if config.model_overrides else ""
    return f"loss={config.loss} {settings}{overrides}"


def to_yaml(config: TrainConfig, run_id: str | None = None) -> str:
    """The config as YAML; a run's ``config.yaml`` starts with its ``run_id``."""
    data = {RUN_ID: run_id} if run_id is not None else {}
    data |= {k: getattr(config, k) for k in _USER_KEYS}
    return yaml.safe_dump(data, sort_keys=False)


def fit_micro_batch(config: TrainConfig, processes: int) -> tuple[TrainConfig, str | None]:
    """``config`` with a ``micro_batch_size`` that ``processes`` processes can run: a step of
    ``global_batch_size`` is ``accumulation x micro_batch_size x processes`` examples. A
    micro-batch larger than ``global_batch_size / processes`` (a one-process recipe on N) is
    lowered to the largest size that divides; returns the config and a line saying so (None
    when nothing changed). Raises ConfigError where no size fits."""
    micro, total = config.micro_batch_size, config.global_batch_size
    if total % processes:
        raise ConfigError(f"global_batch_size={total} must be a multiple of the number of "
                          f"processes ({processes})")
    if micro * processes > total:
        fitting = max(m for m in range(1, total // processes + 1) if total % (m * processes) == 0)
        return (dataclasses.replace(config, micro_batch_size=fitting),
                f"micro_batch_size={micro} lowered to {fitting}: global_batch_size={total} on "
                f"{processes} processes is {total // processes} per process")
    if total % (micro * processes):
        raise ConfigError(f"global_batch_size={total} must be a multiple of "
                          f"micro_batch_size x processes = {micro} x {processes}")
    return config, None
