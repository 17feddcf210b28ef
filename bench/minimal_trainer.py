"""A minimal Stage-2 training step on a small Qwen2, for the step-level benchmark.

``step_level`` compares our fused losses with the naive full-logits ones inside the same
optimizer step, which ``redi train`` cannot do (it only offers the fused losses; the
``trainer`` section of ``bench/run.py`` measures it). This module gives that step:

* ``build_policy(shape, dtype, device)``: a randomly initialised ``Qwen2ForCausalLM``.
* ``pair_batch(pairs, seq_len, vocab, device)``: ``input_ids`` and aligned ``labels``
  ``[2B, T]``, chosen rows first, the first 1/8 of each row a prompt (label -100).
* ``TrainStep(model, loss, impl, reference)``: calling it on ``(input_ids, labels)`` runs one
  optimizer step (AdamW, Stage-2 learning rate and weight decay); ``step.state_bytes()`` is
  the memory it keeps between steps (weights, optimizer state, reference weights).

``impl="ours"`` runs the decoder stack (``model.get_decoder()``) and redi's fused loss on
``last_hidden_state`` and the lm_head weight; ``impl="naive"`` computes the full logits with
the lm_head and the same loss from ``redi.functional`` (``loss_cases.pair_loss``). DPO's
``reference``: ``"online"`` runs a frozen copy of the initial model under no_grad every
step for the reference log-prob sums (``redi.token_logprobs`` with ``ours``, full logits with
``naive``); ``"cached"`` uses precomputed constants, as a trainer that scored the reference
before training would.
"""

from __future__ import annotations

import copy

import torch
from loss_cases import (
    fused_loss,
    naive_token_logps,
    pair_loss,
    reference_kwargs,
    sequence_logps,
)
from settings import ModelShape
from transformers import Qwen2Config, Qwen2ForCausalLM

import redi

REFERENCES = ("online", "cached")


def build_policy(shape: ModelShape, dtype, device, seed=0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, max_position_embeddings=2**18,
        tie_word_embeddings=False, use_cache=False, attn_implementation="sdpa")
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype)


def pair_batch(pairs, seq_len, vocab, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (2 * pairs, seq_len), generator=gen)
    labels = torch.full_like(input_ids, -100)
    labels[:, :-1] = input_ids[:, 1:]  # position t predicts token t + 1
    labels[:, : seq_len // 8] = -100
    return input_ids.to(device), labels.to(device)


def _sequence_logps(model, impl, input_ids, labels):
    hidden = model.get_decoder()(input_ids=input_ids).last_hidden_state
    head = model.get_output_embeddings()
    if impl == "ours":
        token_logps = redi.token_logprobs(hidden, head.weight, labels, bias=head.bias)
    else:
        token_logps = naive_token_logps(head(hidden), labels)
    return sequence_logps(token_logps, labels)[0]


def _tensor_bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class TrainStep:
    """One Stage-2 optimizer step of ``model`` on the loss ``loss`` ("redi", "dpo", "simpo")."""

    def __init__(self, model, loss, impl, reference=None, lr=1e-6, weight_decay=1e-4):
        if impl not in ("ours", "naive"):
            raise ValueError(f"impl must be 'ours' or 'naive', got {impl!r}")
        if (loss == "dpo") != (reference in REFERENCES):
            raise ValueError(f"DPO needs reference in {REFERENCES}, the others none")
        self.model, self.loss, self.impl, self.reference = model, loss, impl, reference
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.fused = fused_loss(loss, "auto") if impl == "ours" else None
        self.reference_model = (copy.deepcopy(model).requires_grad_(False).eval()
                                if reference == "online" else None)

    def _reference_logps(self, input_ids, labels):
        if self.reference == "cached":
            return torch.zeros(input_ids.shape[0], device=input_ids.device)
        with torch.no_grad():
            return _sequence_logps(self.reference_model, self.impl, input_ids, labels)

    def _loss(self, input_ids, labels, ref_logps):
        if self.impl == "naive":
            return pair_loss(self.loss, *sequence_logps(
                naive_token_logps(self.model(input_ids=input_ids).logits, labels), labels),
                ref_logps)
        hidden = self.model.get_decoder()(input_ids=input_ids).last_hidden_state
        head = self.model.get_output_embeddings()
        return self.fused(head.weight, hidden, labels, head.bias,
                          **reference_kwargs(self.loss, ref_logps))[0]

    def __call__(self, input_ids, labels):
        self.optimizer.zero_grad(set_to_none=True)
        ref_logps = None if self.reference is None else self._reference_logps(input_ids, labels)
        self._loss(input_ids, labels, ref_logps).backward()
        self.optimizer.step()

    def state_bytes(self) -> int:
        """Weights, optimizer state and reference weights: the memory kept between steps."""
        state = [t for s in self.optimizer.state.values() for t in s.values()]
        reference = [] if self.reference_model is None else self.reference_model.parameters()
        return _tensor_bytes([*self.model.parameters(), *state, *reference])
