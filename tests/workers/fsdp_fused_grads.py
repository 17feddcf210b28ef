"""Run under torchrun (2 processes, gloo): the fused loss through the FSDP2 root gives the
gradients of the unsharded full-logits reference. Exits non-zero on a mismatch.

    torchrun --nproc_per_node 2 tests/workers/fsdp_fused_grads.py tied|untied
"""

import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from redi.losses import FusedLinearREDILoss
from redi.train.config import TrainConfig
from redi.train.distributed import exit_process, finish, init_distributed, shutdown
from redi.train.modeling import CausalLMWithFusedLoss, shard

V, B, T = 96, 2, 12


def reference_redi_loss(lm, ids, labels):
    logp = torch.log_softmax(lm(input_ids=ids).logits.double(), dim=-1)
    valid = labels != -100
    lp = (logp.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1) * valid).sum(-1)
    n = valid.sum(-1)
    return (-lp[:B] / n[:B] + 0.8 * lp[B:] / n[B:]).mean()


def main(tied: bool):
    env = init_distributed()
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=tied)
    lm, reference = Qwen2ForCausalLM(config), Qwen2ForCausalLM(config)
    reference.load_state_dict(lm.state_dict())
    model = shard(CausalLMWithFusedLoss(lm), TrainConfig(dtype="fp32"), env.device)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (2 * B, T), generator=gen)
    labels = torch.randint(0, V, (2 * B, T), generator=gen)
    labels[:, :4] = -100
    # Each of the 2 ranks takes one pair (its chosen row and its rejected row); FSDP
    # averages the two ranks' gradients, so each rank's loss is its pair's term.
    mine = [env.rank, B + env.rank]
    loss, _ = model({"input_ids": ids[mine], "labels": labels[mine]},
                    FusedLinearREDILoss(alpha=0.8))
    loss.backward()
    reference_redi_loss(reference, ids, labels).backward()
    worst = 0.0
    for (name, p), (_, q) in zip(lm.named_parameters(), reference.named_parameters()):
        err = (p.grad.full_tensor() - q.grad).abs().max().item()
        scale = q.grad.abs().max().item()
        worst = max(worst, err / max(scale, 1e-12))
        assert err <= 1e-5 * max(scale, 1.0), (name, err, scale)
    if env.is_main:
        print(f"max relative gradient error {worst:.2e} ({'tied' if tied else 'untied'})")
    finish()
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1] == "tied")
    exit_process(0)
