"""Time per token at the Qwen2.5-Math-1.5B head, ours vs naive vs Cut Cross-Entropy vs the
3-matmul floor, with the ``head`` section's own code (T=128, one thread, 5 repeats). Run from
``bench/``:

    OMP_NUM_THREADS=1 python results/cpu-2026-12-03/head-time-per-token-quiet.py
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # bench/

import real_head  # noqa: E402
import run  # noqa: E402

torch.set_num_threads(1)
settings = run._settings(run.parse_args(["--threads", "1", "--repeats", "5"]))
shape = real_head.head_shape(settings)
labels = ["ours", "naive", real_head.CCE, real_head.FLOOR]
print(json.dumps(real_head._time_per_token(settings, shape, labels), indent=1))
