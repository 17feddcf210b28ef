"""Every Triton kernel variant compiles for sm_80 and sm_90 and fits the target's shared memory.

No GPU needed: Triton's compiler builds cubin for a ``GPUTarget`` on CPU. The variants come
from the kernels themselves (``triton_variants.py``: each kernel x dtype x constexpr values,
its autotune configs in order until one fits). About 100 compiles, several minutes on two
cores, so it is marked ``triton_compile``: skipped by ``make test``, run by
``make compile-check`` (``pytest -m triton_compile``) and by ``.ci/run``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.triton_compile

SCRIPT = Path(__file__).with_name("triton_variants.py")


def test_every_variant_has_a_config_within_shared_memory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, every time
    out = tmp_path / "records.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=1800)
    print(done.stdout)  # the per-variant shared-memory table (pytest -s shows it)
    records = json.loads(out.read_text()) if out.exists() else []
    errors = [r for r in records if r["error"]]
    assert not errors, "\n".join(f"{r['kernel']} {r['dtype']} {r['target']} "
                                 f"{r['constexprs']}: {r['error']}" for r in errors)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    variants = {(r["kernel"], r["dtype"], json.dumps(r["constexprs"], sort_keys=True))
                for r in records}
    assert len(variants) >= 32, variants  # 2 kernels, 3 launches, 3 dtypes, their flags
    assert {r["target"] for r in records} == {"sm_80", "sm_90"}
    assert all(r["cubin_bytes"] > 0 for r in records)
