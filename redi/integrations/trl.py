"""REDI, DPO and SimPO with the fused losses inside TRL: ``REDITrainer`` and ``REDIConfig``.

A drop-in for TRL's ``DPOTrainer``: the same constructor, the same preference datasets
(``prompt``/``chosen``/``rejected``, conversational or plain text, tokenized by TRL's own
code), the same ``DPOConfig`` fields, but the loss is a ``redi.losses`` fused loss on the
final hidden states and the LM head weight, so no ``[tokens x vocab]`` logits are built::

    from redi.integrations.trl import REDIConfig, REDITrainer

    args = REDIConfig(output_dir="out", loss_type="redi", alpha=0.8, learning_rate=1e-6)
    trainer = REDITrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()

``loss_type``: ``"redi"`` (reference-free; ``alpha``, ``chosen_coef``, ``neg_reweight_gamma``,
``negative_floor``),
``"sigmoid"`` (DPO against a frozen reference: ``ref_model`` if given, the base model with
the adapters disabled for a PEFT model, else a frozen copy of ``model`` taken before
training; a dataset with ``ref_chosen_logps``/``ref_rejected_logps`` columns uses those (both
columns, every value finite), and
``precompute_ref_log_probs=True`` computes those columns once before training, for the train
and eval datasets, and then holds no reference model) or ``"simpo"`` (``beta``,
``simpo_gamma``, reference-free). A plain ``DPOConfig`` works too
and means DPO. Hidden states and head weight come from the wrapped model's own forward
(``redi.integrations.transformers``), so DDP and FSDP reduce the head's gradient like any
other. A non-finite training loss stops the run before the optimizer step (``FloatingPointError``),
as ``redi train`` does. A pair whose chosen and rejected completions tokenize to the same ids
teaches no preference (under REDI it is SFT at weight ``1 - alpha``): as ``redi data prepare``
does, such pairs are counted, dropped with a warning naming the first one, and kept with
``drop_identical_pairs=False``; a dataset of nothing else is an error.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass, field

import torch

try:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.base_trainer import _BaseTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference
except ImportError as err:  # one line, naming the extra
    raise ImportError(f"redi.integrations.trl needs the 'trl' extra (pip install "
                      f"'redi[trl]'): {err}") from err

from redi import losses
from redi.integrations.transformers import head_inputs, logit_softcap, with_model_softcap
from redi.pair_logprob_sums import pair_logprobs

LOSS_TYPES = ("redi", "sigmoid", "simpo")
IGNORE_INDEX = -100
log = logging.getLogger(__name__)


@dataclass
class REDIConfig(DPOConfig):
    """``DPOConfig`` plus the REDI and SimPO hyperparameters and the fused-loss backend.

    ``loss_type`` defaults to ``"redi"``; ``beta`` is DPO's (and SimPO's) beta."""

    loss_type: list[str] = field(default_factory=lambda: ["redi"], metadata={
        "help": "redi | sigmoid (DPO) | simpo"})
    alpha: float = field(default=0.8, metadata={"help": "REDI: weight of the negatives"})
    chosen_coef: float = field(default=1.0, metadata={"help": "REDI: weight of the positives"})
    neg_reweight_gamma: float | None = field(default=None, metadata={
        "help": "REDI: optional negative reweighting exp(gamma * lp(y_l)/|y_l|)"})
    negative_floor: float | None = field(default=None, metadata={
        "help": "REDI: rejected tokens below this probability get no gradient (off: None)"})
    drop_identical_pairs: bool = field(default=True, metadata={
        "help": "drop (and count) pairs whose chosen and rejected tokenize the same"})
    simpo_gamma: float = field(default=1.0, metadata={"help": "SimPO: target reward margin"})
    loss_backend: str = field(default="auto", metadata={"help": "auto | triton | torch"})
    loss_single_pass: bool = field(default=False, metadata={
        "help": "DPO/SimPO/reweighted REDI: gradients in one pass per pair (see redi.losses)"})


def _fused_loss(args: DPOConfig) -> torch.nn.Module:
    """The fused loss the config asks for (a plain DPOConfig: its defaults, i.e. DPO)."""
    types = list(args.loss_type)
    if len(types) != 1 or types[0] not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES} (one loss), got {types}")
    if getattr(args, "ld_alpha", None) is not None or args.loss_weights not in (None, [1.0]):
        raise ValueError("ld_alpha and loss_weights are not supported by REDITrainer")
    common = dict(backend=getattr(args, "loss_backend", "auto"),
                  single_pass=getattr(args, "loss_single_pass", False))
    negative_floor = getattr(args, "negative_floor", None)
    if types[0] == "redi":
        return losses.FusedLinearREDILoss(
            alpha=getattr(args, "alpha", 0.8), chosen_coef=getattr(args, "chosen_coef", 1.0),
            neg_reweight_gamma=getattr(args, "neg_reweight_gamma", None),
            negative_floor=negative_floor, **common)
    if negative_floor is not None:
        raise ValueError(f"negative_floor is a REDI option; loss_type {types[0]!r} has none")
    if types[0] == "simpo":
        return losses.FusedLinearSimPOLoss(beta=args.beta, gamma=getattr(args, "simpo_gamma", 1.0),
                                           **common)
    return losses.FusedLinearDPOLoss(beta=args.beta, **common)


def _is_empty(value) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):  # conversational: messages with content
        return not value or all(_is_empty(m.get("content", "")) for m in value
                                if isinstance(m, dict))
    return value is None


def check_preference_rows(dataset, name: str = "train"):
    """A one-line ValueError naming the first row without a chosen or rejected completion,
    or with an empty one."""
    for i, row in enumerate(dataset):
        for key in ("chosen", "rejected"):
            if key not in row or row[key] is None:
                raise ValueError(f"{name} dataset row {i}: no {key!r} completion")
            if _is_empty(row[key]):
                raise ValueError(f"{name} dataset row {i}: empty {key!r} completion")


REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def check_reference_columns(dataset, name: str = "train"):
    """Supplied reference log-probs: both columns or neither, and every value finite (a
    NaN would make the loss NaN and, logged as 0, the weights NaN). One-line ValueError
    naming the first bad row."""
    present = [c for c in REFERENCE_COLUMNS if c in dataset.column_names]
    if len(present) == 1:
        missing = next(c for c in REFERENCE_COLUMNS if c not in present)
        raise ValueError(f"{name} dataset has a {present[0]!r} column but no {missing!r}")
    for key in present:
        for i, value in enumerate(dataset[key]):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} dataset row {i}: {key} is {value!r}; reference "
                                 "log-probs must be finite")


def _check_tokenized(dataset, name: str):
    for i, row in enumerate(dataset):
        for key in ("chosen_ids", "rejected_ids"):
            if len(row[key]) == 0:
                raise ValueError(f"{name} dataset row {i}: the {key[:-4]!r} completion has "
                                 "no tokens after tokenization")


def without_identical_pairs(dataset, name: str, drop: bool):
    """``dataset`` less its rows whose chosen and rejected ids are equal (``drop``), and how
    many there were; a warning names the count and the first row, a dataset of nothing
    else is a ValueError."""
    pairs = zip(dataset["chosen_ids"], dataset["rejected_ids"])
    same = [i for i, (chosen, rejected) in enumerate(pairs) if chosen == rejected]
    if not same:
        return dataset, 0
    if len(same) == len(dataset):
        raise ValueError(f"{name} dataset: every one of its {len(dataset)} pairs has the same "
                         "chosen and rejected completion; there is no preference to learn")
    what = "dropped" if drop else "kept (drop_identical_pairs=False)"
    log.warning("%s dataset: %s %d of %d pairs whose chosen and rejected completions "
                "tokenize the same (the first: row %d)", name, what, len(same), len(dataset),
                same[0])
    if drop:
        dropped = set(same)
        dataset = dataset.select([i for i in range(len(dataset)) if i not in dropped])
    return dataset, len(same)


def shifted_labels(input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the hidden states: position t predicts token t + 1; prompt,
    padding and the last position are ``IGNORE_INDEX``."""
    targets = input_ids.masked_fill(completion_mask == 0, IGNORE_INDEX)
    return torch.nn.functional.pad(targets[:, 1:], (0, 1), value=IGNORE_INDEX)


class REDITrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` interface with the fused REDI / DPO / SimPO losses.

    Reuses DPOTrainer's dataset preparation (prompt extraction, chat template, EOS,
    tokenization) and collator; replaces its model set-up (no reference model for REDI
    and SimPO, no patched LM head) and its loss.
    """

    _tag_names = ["trl", "redi"]
    _name = "REDI"
    loss_is_scaled_for_ga = False  # compute_loss returns the micro-batch mean

    def __init__(self, model, ref_model=None, args: DPOConfig | None = None,
                 data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, compute_metrics=None, callbacks=None,
                 optimizers=(None, None), peft_config=None):
        args = args if args is not None else REDIConfig("redi-trainer")
        self.loss_fn = _fused_loss(args)
        self.loss_type = list(args.loss_type)[0]
        if train_dataset is None:
            raise ValueError("train_dataset is required")
        if isinstance(model, str):
            model = AutoModelForCausalLM.from_pretrained(model, **(args.model_init_kwargs or {}))
        if processing_class is None:
            processing_class = AutoTokenizer.from_pretrained(model.config._name_or_path)
        self._tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self._is_vlm = self._is_vision_dataset = False
        self.padding_free = False
        datasets = {"train": train_dataset}
        if isinstance(eval_dataset, dict):
            datasets.update(eval_dataset)
        elif eval_dataset is not None:
            datasets["eval"] = eval_dataset
        self.identical_pairs = {}  # per dataset name: how many (dropped unless asked not to)
        for name, dataset in datasets.items():
            check_preference_rows(dataset, name)
            check_reference_columns(dataset, name)
            dataset = self._prepare_dataset(dataset, processing_class, args, name)
            _check_tokenized(dataset, name)
            datasets[name], self.identical_pairs[name] = without_identical_pairs(
                dataset, name, getattr(args, "drop_identical_pairs", True))
        train_dataset = datasets.pop("train")
        if eval_dataset is not None:
            eval_dataset = datasets if isinstance(eval_dataset, dict) else datasets["eval"]
        if data_collator is None:
            data_collator = DataCollatorForPreference(
                pad_token_id=self._tokenizer.pad_token_id, max_length=args.max_length,
                truncation_mode=args.truncation_mode, pad_to_multiple_of=args.pad_to_multiple_of)
        self.precompute_ref_logps = "ref_chosen_logps" in train_dataset.column_names
        precompute = (self.loss_type == "sigmoid" and args.precompute_ref_log_probs
                      and not self.precompute_ref_logps)
        if self.loss_type == "sigmoid" and ref_model is None and not self.precompute_ref_logps \
                and not precompute and not hasattr(model, "disable_adapter"):
            ref_model = copy.deepcopy(model)  # the frozen policy before training
        _BaseTrainer.__init__(self, model=model, args=args, data_collator=data_collator,
                              train_dataset=train_dataset, eval_dataset=eval_dataset,
                              processing_class=processing_class,
                              compute_metrics=compute_metrics, callbacks=callbacks,
                              optimizers=optimizers)
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.requires_grad_(False)
            self.ref_model = self.accelerator.prepare_model(ref_model, evaluation_mode=True)
        self.beta = args.beta
        self._metrics = {"train": {}, "eval": {}}
        self.maybe_activation_offload_context = contextlib.nullcontext()
        if precompute:
            self._precompute_reference_columns(args)

    def _precompute_reference_columns(self, args):
        """Add ``ref_chosen_logps``/``ref_rejected_logps`` to the train and eval datasets
        (the reference before any step: ``ref_model``, the adapters off, or the model
        itself), then drop the reference model. Every process computes every row."""
        train_size = args.precompute_ref_batch_size or args.per_device_train_batch_size
        eval_size = args.precompute_ref_batch_size or args.per_device_eval_batch_size
        self.train_dataset = self._with_reference_logps(self.train_dataset, train_size)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {name: self._with_reference_logps(dataset, eval_size)
                                 for name, dataset in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = self._with_reference_logps(self.eval_dataset, eval_size)
        self.ref_model = None
        self.precompute_ref_logps = True

    def _with_reference_logps(self, dataset, batch_size: int):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             collate_fn=self.data_collator)
        model, chosen, rejected = self.model, [], []
        was_training = model.training
        model.eval()
        for batch in loader:
            batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
            labels = shifted_labels(batch["input_ids"], batch["completion_mask"])
            ref_chosen, ref_rejected = self._reference_logps(model, batch, labels)
            chosen += ref_chosen.float().tolist()
            rejected += ref_rejected.float().tolist()
        model.train(was_training)
        return dataset.add_column("ref_chosen_logps", chosen) \
            .add_column("ref_rejected_logps", rejected)

    def _reference_logps(self, model, inputs, labels):
        """DPO's frozen reference: dataset columns, ``ref_model``, the adapters off, or
        (while precomputing, before any step) the model itself."""
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        peft = hasattr(self.accelerator.unwrap_model(model), "disable_adapter")
        if self.ref_model is None and not peft and self.precompute_ref_logps:
            raise ValueError("this batch has no ref_chosen_logps/ref_rejected_logps and the "
                             "trainer holds no reference model (with precomputed or supplied "
                             "reference log-probs it keeps none): add those columns to this "
                             "dataset or pass ref_model")
        context = contextlib.nullcontext()
        if self.ref_model is None and peft:  # the base model is the reference
            context = self.accelerator.unwrap_model(model).disable_adapter()
        with torch.no_grad(), context:
            reference = self.ref_model or model
            hidden, weight, bias = head_inputs(reference, allow_softcap=True,
                                               input_ids=inputs["input_ids"],
                                               attention_mask=inputs["attention_mask"])
            return pair_logprobs(weight, hidden, labels, bias, backend=self.loss_fn.backend,
                                 softcap=logit_softcap(reference))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = shifted_labels(inputs["input_ids"], inputs["completion_mask"])
        extra = {}
        if self.loss_type == "sigmoid":
            ref_chosen, ref_rejected = self._reference_logps(model, inputs, labels)
            extra = dict(ref_chosen_logps=ref_chosen, ref_rejected_logps=ref_rejected)
        hidden, weight, bias = head_inputs(model, allow_softcap=True,
                                           input_ids=inputs["input_ids"],
                                           attention_mask=inputs["attention_mask"])
        # a Gemma-style final_logit_softcapping of the model goes into the loss
        loss_fn = with_model_softcap(self.loss_fn, logit_softcap(model))
        loss, metrics = loss_fn(weight, hidden, labels, bias, **extra)
        if model.training:
            self._stop_if_not_finite(loss)
        self._record(metrics)
        return (loss, metrics) if return_outputs else loss

    def _stop_if_not_finite(self, loss):
        """As ``redi train`` does: a non-finite loss on any process stops training before
        the optimizer step (the Trainer would log it as 0 and step into NaN weights)."""
        losses = self.accelerator.gather(loss.detach().reshape(1))
        bad = losses[~torch.isfinite(losses)]
        if len(bad):
            raise FloatingPointError(f"step {self.state.global_step + 1}: loss "
                                     f"{bad[0].item()}; stopped before the optimizer step")

    def _record(self, metrics: dict):
        """Per-pair metrics, gathered over processes, averaged by ``DPOTrainer.log``."""
        mode = "train" if self.model.training else "eval"
        values = {"logps/chosen": metrics["chosen_logps_avg" if "chosen_logps_avg" in metrics
                                          else "chosen_logps"],
                  "logps/rejected": metrics["rejected_logps_avg" if "rejected_logps_avg"
                                            in metrics else "rejected_logps"]}
        if "reward_margins" in metrics:
            values.update({"rewards/chosen": metrics["chosen_rewards"],
                           "rewards/rejected": metrics["rejected_rewards"],
                           "rewards/margins": metrics["reward_margins"],
                           "rewards/accuracies": (metrics["reward_margins"] > 0).float()})
        for key, value in values.items():
            gathered = self.accelerator.gather_for_metrics(value.detach().float())
            self._metrics[mode].setdefault(key, []).append(gathered.mean().item())

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

