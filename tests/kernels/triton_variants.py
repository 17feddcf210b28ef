"""Every Triton kernel variant redi can launch, compiled for real GPU targets without a GPU.

Triton's compiler turns a kernel into cubin for a ``GPUTarget`` with no device present (it
ships ptxas). A variant is (kernel, input dtype, values of the kernel's non-tile constexprs);
its configs are the tiles the launch may pick. Both are read from ``triton_impl`` itself:

* kernels: the module's autotuned launchers (``triton.autotune`` objects) with their
  configs; a kernel with a ``RECOMPUTE`` flag is also launched without it on the fixed
  ``_ELEMENTWISE_BLOCKS`` tiles (``_launch_dlogits``);
* constexprs: the kernel's own ``tl.constexpr`` parameters minus the tile sizes. Each takes
  the values in ``CONSTEXPR_VALUES`` if listed there, else it is a flag (False, True); a new
  constexpr is thus compiled both ways without editing this file;
* ``launchable`` drops the combinations the host code never makes.

For each variant and target the configs are compiled in the order declared until one fits
the target's shared memory per block (``--every-config``: all of them). A launch whose
config needs more is skipped by the autotuner, or fails outright if no config fits: that is
what this guards against. Run ``python tests/kernels/triton_variants.py`` for the table; the test is
``tests/kernels/test_triton_compile.py``. ``TRITON_INTERPRET`` must be unset (it swaps in the
interpreter's single small config), so this runs in its own process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

KiB = 1024
# Shared memory one block may opt in to (cudaDevAttrMaxSharedMemoryPerBlockOptin), from the
# CUDA C++ Programming Guide's table of compute capabilities: 163 KiB on 8.0 (A100), 227 KiB
# on 9.0 (H100/H200).
TARGETS = {"sm_80": (80, 163 * KiB), "sm_90": (90, 227 * KiB)}
DTYPES = ("fp32", "bf16", "fp16")
TILE_KEYS = ("BLOCK_N", "BLOCK_V", "BLOCK_H")
# Non-flag constexprs and their values per input dtype (``triton_impl._dot_precision``).
CONSTEXPR_VALUES = {
    "DOT_PRECISION": lambda dtype: ("ieee", "tf32") if dtype == "fp32" else ("tf32",),
}
# Pointer parameters in the input dtype; labels are int64; other pointers are fp32 buffers.
INPUT_POINTERS = {"x_ptr", "w_ptr", "b_ptr", "z_ptr"}
INT_SCALARS = {"N", "V", "H", "cols_per_split", "num_splits", "label_offset"}


def _impl():
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter has its own configs")
    from redi.kernels import triton_impl

    return triton_impl


def _elementwise_config(impl):
    import triton

    blocks = dict(impl._ELEMENTWISE_BLOCKS)
    return triton.Config({k: blocks.pop(k) for k in TILE_KEYS}, **blocks)


def launches(impl):
    """[(name, jit function, configs, fixed constexprs)]: every way the module launches."""
    from triton.runtime.autotuner import Autotuner

    found = []
    for _, obj in sorted(vars(impl).items()):
        if not isinstance(obj, Autotuner):
            continue
        fn = obj.fn
        if "RECOMPUTE" in fn.arg_names:
            found.append((f"{fn.__name__}[RECOMPUTE]", fn, obj.configs, {"RECOMPUTE": True}))
            found.append((f"{fn.__name__}[elementwise]", fn, [_elementwise_config(impl)],
                          {"RECOMPUTE": False}))
        else:
            found.append((fn.__name__, fn, obj.configs, {}))
    return found


def constexpr_names(fn):
    return [p.name for p in fn.params if p.is_constexpr and p.name not in TILE_KEYS]


def launchable(dtype, values) -> bool:
    """The host code's rules: 16-bit logits are ROUNDED exactly when they are stored."""
    if "ROUNDED" in values and "STORE_LOGITS" in values:
        return values["ROUNDED"] == (values["STORE_LOGITS"] and dtype != "fp32")
    return True


def variants(impl):
    """[(kernel name, dtype, constexpr values)] of every launchable variant."""
    out = []
    for name, fn, _, fixed in launches(impl):
        free = [c for c in constexpr_names(fn) if c not in fixed]
        for dtype in DTYPES:
            domains = [CONSTEXPR_VALUES[c](dtype) if c in CONSTEXPR_VALUES else (False, True)
                       for c in free]
            for combo in itertools.product(*domains):
                values = {**fixed, **dict(zip(free, combo))}
                if launchable(dtype, values):
                    out.append((name, dtype, values))
    return out


def _signature(fn, dtype, constexprs):
    signature, attrs = {}, {}
    for i, p in enumerate(fn.params):
        if p.name in constexprs:
            signature[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            kind = dtype if p.name in INPUT_POINTERS else "i64" if "label" in p.name else "fp32"
            signature[p.name] = "*" + kind
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif p.name in INT_SCALARS or p.name.startswith("stride"):
            signature[p.name] = "i32"
            if p.name.startswith("stride") or p.name == "H":  # H=1536 and its strides
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[p.name] = "fp32"
    return signature, attrs


def compile_one(job):
    """Compile one (kernel, dtype, constexprs, config index, target); return its record."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    name, dtype, values, config_index, target = job
    kernel = {n: (fn, configs) for n, fn, configs, _ in launches(_impl())}
    fn, configs = kernel[name]
    config = configs[config_index]
    constexprs = {**values, **config.kwargs}
    signature, attrs = _signature(fn, dtype, constexprs)
    capability, limit = TARGETS[target]
    start = time.perf_counter()
    record = dict(kernel=name, dtype=dtype, constexprs=values, target=target,
                  config=dict(config.kwargs, num_warps=config.num_warps,
                              num_stages=config.num_stages), limit=limit)
    try:
        compiled = triton.compile(
            ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", capability, 32),
            options=dict(num_warps=config.num_warps, num_stages=config.num_stages))
    except Exception as err:  # a variant that does not compile is a finding: report it
        return dict(record, shared=None, fits=False, error=f"{type(err).__name__}: {err}"[:500],
                    seconds=time.perf_counter() - start)
    shared = compiled.metadata.shared
    return dict(record, shared=shared, fits=shared <= limit, error=None,
                seconds=time.perf_counter() - start, cubin_bytes=len(compiled.asm["cubin"]))


def check(every_config=False, workers=None):
    """Records of the compiles needed: per variant and target, configs in order until one
    fits (every one with ``every_config``)."""
    impl = _impl()
    configs = {name: len(c) for name, _, c, _ in launches(impl)}
    todo = [(name, dtype, values, target)
            for name, dtype, values in variants(impl) for target in TARGETS]
    records = []
    with ProcessPoolExecutor(workers or os.cpu_count()) as pool:
        index = 0
        while todo:  # round k compiles config k of every variant still without a fit
            jobs = [(n, d, v, index, t) for n, d, v, t in todo if index < configs[n]]
            if not jobs:
                break
            done = list(pool.map(compile_one, jobs))
            records += done
            fitted = {_key(r) for r in done if r["fits"]}
            todo = [(n, d, v, t) for n, d, v, t in todo
                    if every_config or _key(dict(kernel=n, dtype=d, constexprs=v, target=t))
                    not in fitted]
            index += 1
    return records


def _key(record):
    return (record["kernel"], record["dtype"], json.dumps(record["constexprs"], sort_keys=True),
            record["target"])


def unfit(records):
    """Variant keys (kernel, dtype, constexprs, target) with no config within the limit."""
    fitted = {_key(r) for r in records if r["fits"]}
    return sorted({_key(r) for r in records} - fitted)


def table(records) -> str:
    lines = [f"{'kernel':<28} {'dtype':<5} {'target':<6} {'constexprs':<62} "
             f"{'tiles N/V/H w s':<18} {'smem KiB':>8} {'limit':>5}  fits"]
    for r in sorted(records, key=lambda r: (_key(r), str(r["config"]))):
        c = r["config"]
        flags = " ".join(f"{k}={v}" for k, v in r["constexprs"].items())
        tiles = (f"{c['BLOCK_N']}/{c['BLOCK_V']}/{c['BLOCK_H']} {c['num_warps']} "
                 f"{c['num_stages']}")
        shared = "error" if r["shared"] is None else f"{r['shared'] / KiB:.0f}"
        lines.append(f"{r['kernel']:<28} {r['dtype']:<5} {r['target']:<6} {flags:<62} "
                     f"{tiles:<18} {shared:>8} {r['limit'] // KiB:>5}  "
                     f"{'yes' if r['fits'] else 'NO'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--every-config", action="store_true", help="compile every config")
    p.add_argument("--workers", type=int, help="parallel compiles (default: CPU count)")
    p.add_argument("--json", help="write the records here")
    args = p.parse_args(argv)
    start = time.perf_counter()
    records = check(args.every_config, args.workers)
    print(table(records))
    missing = unfit(records)
    print(f"\n{len(records)} compiles, {len({_key(r) for r in records})} variant x target, "
          f"{time.perf_counter() - start:.0f} s; without a fitting config: {len(missing)}")
    for key in missing:
        print("  NO FIT:", *key)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
