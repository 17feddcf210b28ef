"""Packed rows without flash-attn (redi.train.packed_attention): each sequence attends
within itself, the loss and gradients equal those of the dense [1, 1, N, N] block-causal
mask the trainer used before (sdpa and eager, plain and LoRA), and no tensor of the row's
[N, N] size is ever made in the forward or backward."""

import copy

import pytest
import torch
from test_lora import tiny_lm
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM

from redi.data.batching import pack_sequences, pad_sequences
from redi.integrations.transformers import head_inputs
from redi.losses import FusedLinearSFTLoss
from redi.train import lora
from redi.train.config import TrainConfig
from redi.train.modeling import CausalLMWithFusedLoss

LENGTHS = (7, 12, 5)  # N = 24


def _sequences():
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in LENGTHS:
        ids = torch.randint(0, 40, (n,), generator=gen).tolist()
        out.append((ids, [-100, -100, *ids[2:]]))
    return out


def _lm(attn: str, with_lora: bool):
    lm = tiny_lm()
    lm = AutoModelForCausalLM.from_config(lm.config, attn_implementation=attn,
                                          dtype=torch.float32)
    lm.load_state_dict(tiny_lm().state_dict())
    return lora.apply_lora(lm, TrainConfig(lora_r=4)) if with_lora else lm


def dense_block_causal_loss(lm, batch):
    """The trainer's former path: one additive [1, 1, N, N] mask for the whole row."""
    seq = batch["seq_index"]
    visible = (seq[:, None] == seq[None, :]).tril()
    mask = torch.zeros(visible.shape).masked_fill_(~visible, torch.finfo(torch.float32).min)
    hidden, weight, bias = head_inputs(lm, input_ids=batch["input_ids"],
                                       position_ids=batch["position_ids"],
                                       attention_mask=mask[None, None])
    return FusedLinearSFTLoss()(weight, hidden, batch["labels"], bias)[0]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("with_lora", [False, True])
def test_packed_loss_and_gradients_equal_the_dense_mask(attn, with_lora):
    batch = pack_sequences(_sequences())
    reference = _lm(attn, with_lora)
    model = CausalLMWithFusedLoss(copy.deepcopy(reference))
    expected = dense_block_causal_loss(reference, batch)
    expected.backward()
    loss, _ = model(batch, FusedLinearSFTLoss())
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    trained = [(p, q) for p, q in zip(model.lm.parameters(), reference.parameters(),
                                      strict=True) if q.requires_grad]
    assert trained
    for p, q in trained:
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


def test_padded_batches_keep_their_attention():
    """The packed implementation leaves padded batches to the base one, with its mask."""
    batch = pad_sequences(_sequences(), pad_token_id=0)
    reference = _lm("sdpa", False)
    model = CausalLMWithFusedLoss(copy.deepcopy(reference))
    assert model.lm.config._attn_implementation == "redi_packed_sdpa"
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    expected, _, _ = head_inputs(reference, **inputs)
    hidden, _, _ = head_inputs(model.lm, **inputs)
    torch.testing.assert_close(hidden, expected, rtol=1e-6, atol=1e-6)


class _Shapes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_row_by_row_tensor_is_made(attn):
    batch = pack_sequences(_sequences())
    n = sum(LENGTHS)
    model = CausalLMWithFusedLoss(_lm(attn, False))
    with _Shapes() as seen:
        loss, _ = model(batch, FusedLinearSFTLoss())
        loss.backward()
    assert seen.shapes
    square = [s for s in seen.shapes if len(s) >= 2 and s[-1] == n and s[-2] == n]
    assert not square, square[:3]
