"""Run under torchrun (2 processes, gloo): ``step_with_update_norm`` on FSDP2-sharded
parameters (weight decay on) gives the norm of the full parameter change, measured against
a gathered copy of every parameter, and exits non-zero otherwise.

    torchrun --nproc_per_node 2 tests/workers/fsdp_update_norm.py
"""

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from redi.losses import FusedLinearSFTLoss
from redi.train.config import TrainConfig
from redi.train.distributed import exit_process, finish, init_distributed, shutdown
from redi.train.modeling import CausalLMWithFusedLoss, shard
from redi.train.step_metrics import step_with_update_norm


def main():
    env = init_distributed()
    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2))
    model = shard(CausalLMWithFusedLoss(lm), TrainConfig(dtype="fp32"), env.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(env.rank))
    loss, _ = model({"input_ids": ids, "labels": ids}, FusedLinearSFTLoss())
    loss.backward()
    before = [p.full_tensor().clone() for p in model.parameters()]
    measured = step_with_update_norm(optimizer, model)
    expected = sum(float(torch.linalg.vector_norm(p.full_tensor() - b).double() ** 2)
                   for p, b in zip(model.parameters(), before)) ** 0.5
    error = abs(measured - expected) / expected
    assert expected > 0 and error <= 1e-6, (measured, expected)
    if env.is_main:
        print(f"update_norm relative error {error:.1e}")
    finish()
    shutdown()


if __name__ == "__main__":
    main()
    exit_process(0)
