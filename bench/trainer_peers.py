"""Trainer-level peers: ``redi train`` against TRL's trainers on the same model, pairs and steps.

Every configuration trains the same randomly initialized Qwen2 (tied embeddings; shape per
profile in ``PROFILES``) on the same conversational preference pairs (a user ``prompt`` of P
random digit tokens, assistant ``chosen``/``rejected`` completions of T tokens each; one token
per digit with the built-in tokenizer; both data paths apply its ChatML template) for the
same number of optimizer steps, with the same global and micro batch:

* ``redi train``: REDI, DPO with a cached reference (scored once before training), SimPO;
* TRL ``DPOTrainer``: sigmoid loss, precomputed reference (``precompute_ref_log_probs``),
  without and with ``use_liger_kernel=True``;
* TRL ``CPOTrainer``: SimPO (``loss_type="simpo"``, ``cpo_alpha=0``);
* ``redi.integrations.trl.REDITrainer`` (REDI through TRL's trainer), when it is installed.

Each configuration runs in its own process (``trainer_peers_worker.py``) so that its peak
resident set (``ru_maxrss`` of that process, from ``os.wait4``) is its own; this includes the
Python runtime, the libraries and the model, the same for all. Tokens/s counts the same
nominal tokens for every trainer, 2 (P + T) per pair (the few chat-template tokens are not
counted), over the median wall time of
the optimizer steps from ``timed_from`` on. ``reference s`` is the DPO reference pass over all
pairs (``CachedReference.build`` for ours, ``DPOTrainer._precompute_ref_logps`` for TRL). A
configuration that fails is a row with status ``failed`` and its error, never left out.
CPU only (TRL runs with ``use_cpu=True``), one torch thread per core.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_status import status_bytes
from report import Column, Section, add_ratios
from settings import ModelShape, Settings

WORKER = Path(__file__).with_name("trainer_peers_worker.py")
POLL_S = 0.05  # how often run_worker samples a worker's resident set


@dataclasses.dataclass(frozen=True)
class PeerSettings:
    model: ModelShape
    prompt_len: int
    completion_lens: tuple[int, ...]
    global_batch: int  # pairs per optimizer step
    micro_batch: int  # pairs per forward pass
    steps: int
    timed_from: int  # first timed step (1-based); earlier steps are warm-up
    threads: int


PROFILES = {
    "quick": PeerSettings(
        model=ModelShape(hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=512),
        prompt_len=8, completion_lens=(32,), global_batch=2, micro_batch=1, steps=3,
        timed_from=2, threads=1),
    "full": PeerSettings(
        model=ModelShape(hidden=256, layers=2, heads=4, kv_heads=2, intermediate=768,
                         vocab=32000),
        prompt_len=64, completion_lens=(1024, 2048, 4096), global_batch=1, micro_batch=1,
        steps=3, timed_from=2, threads=os.cpu_count() or 1),
}

# (trainer, loss, label, worker fields)
CONFIGS = (
    ("redi-train", "redi", "redi train", {}),
    ("redi-train", "dpo", "redi train (ref cached)", {}),
    ("redi-train", "simpo", "redi train", {}),
    ("trl-dpo", "dpo", "TRL DPOTrainer (ref precomputed)", {"liger": False}),
    ("trl-dpo", "dpo", "TRL DPOTrainer (ref precomputed, liger)", {"liger": True}),
    ("trl-cpo", "simpo", "TRL CPOTrainer (cpo_alpha=0)", {}),
    ("redi-trl", "redi", "redi REDITrainer (TRL)", {}),
)
BETA = {"redi": 0.1, "dpo": 0.1, "simpo": 2.0}  # SimPO: redi's default beta, margin 1.0
SIMPO_GAMMA = 1.0


def _digits(rng: random.Random, n: int) -> str:
    return "".join(f" {rng.randrange(10)}" for _ in range(n))


def write_pairs(path: Path, count: int, prompt_len: int, completion_len: int) -> None:
    """``count`` conversational pairs of random digits (one built-in token per digit)."""
    rng = random.Random(completion_len)
    with path.open("w") as f:
        for _ in range(count):
            f.write(json.dumps({
                "prompt": [{"role": "user", "content": _digits(rng, prompt_len)}],
                "chosen": [{"role": "assistant", "content": _digits(rng, completion_len)}],
                "rejected": [{"role": "assistant", "content": _digits(rng, completion_len)}],
            }) + "\n")


def write_model(directory: Path, shape: ModelShape, max_positions: int) -> None:
    """A randomly initialized Qwen2 of ``shape`` (tied embeddings) and the built-in
    tokenizer, as a Hugging Face directory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from redi.data.tokenizer import load_tokenizer

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden,
                         intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
                         num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)


def prepare_pairs(rows: Path, out: Path) -> None:
    """``redi prepare`` of the pairs written by ``write_pairs`` (no length limits)."""
    done = subprocess.run([sys.executable, "-m", "redi.cli", "prepare", "--input", str(rows),
                           "--output", str(out), "--format", "preference", "--no-progress",
                           "--max-prompt-tokens", "0", "--max-response-tokens", "0"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"redi prepare failed: {done.stderr.strip()[-1000:]}")


def _redi_trl_installed() -> bool:
    try:
        return importlib.util.find_spec("redi.integrations.trl") is not None
    except ModuleNotFoundError:  # no redi.integrations package at all
        return False


def run_worker(spec: dict, work: Path, guard_bytes: int | None = None,
                timeout_s: float | None = None, extra_env: dict | None = None) -> tuple[dict, int]:
    """The worker's result and its peak resident set in bytes (the larger of its
    ``ru_maxrss`` and the resident set sampled every ``POLL_S`` while it runs). A worker whose
    resident set passes ``guard_bytes``, or that runs longer than ``timeout_s``, is killed and
    its result says so (``"stopped": "oom"`` or ``"timeout"``): a row, instead of the
    kernel's OOM killer taking it or another process on the machine."""
    work.mkdir(parents=True)
    spec_path, result_path = work / "spec.json", work / "result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(spec["threads"]),
               HF_HOME=str(work / "hf"), HF_DATASETS_CACHE=str(work / "hf" / "datasets"),
               TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1", **(extra_env or {}))
    stopped, sampled, started = None, 0, time.monotonic()
    with (work / "log.txt").open("w") as log:
        child = subprocess.Popen([sys.executable, str(WORKER), str(spec_path), str(result_path)],
                                 env=env, stdout=log, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            try:
                sampled = max(sampled, status_bytes("VmRSS", child.pid))
            except (OSError, RuntimeError):  # exiting: no status, or no VmRSS any more
                pass
            if stopped is None and guard_bytes is not None and sampled > guard_bytes:
                stopped = ("oom", f"out of memory: its resident set reached "
                                  f"{sampled / 2**30:.2f} GiB, past the "
                                  f"{guard_bytes / 2**30:.2f} GiB guard; killed")
            elif stopped is None and timeout_s is not None and \
                    time.monotonic() - started > timeout_s:
                stopped = ("timeout", f"ran longer than {timeout_s:.0f} s; killed")
            if stopped is not None:
                child.kill()
            time.sleep(POLL_S)
        child.returncode = os.waitstatus_to_exitcode(status)
    peak = max(usage.ru_maxrss * 1024, sampled)
    if stopped is not None:
        return {"error": stopped[1], "stopped": stopped[0]}, peak
    if result_path.is_file():
        return json.loads(result_path.read_text()), peak
    tail = " ".join((work / "log.txt").read_text().split())[-200:]
    how = (f"killed by signal {-child.returncode} (SIGKILL, e.g. the kernel's OOM killer)"
           if child.returncode == -9 else f"exited with status {child.returncode}")
    return {"error": f"worker {how}; log ends: {tail}"}, peak


def _row(trainer, loss, label, completion_len, peers: PeerSettings, result: dict, peak):
    tokens = peers.global_batch * 2 * (peers.prompt_len + completion_len)
    row = dict(section="trainer-peers", loss=loss, impl=label, trainer=trainer,
               seq_len=completion_len, prompt_len=peers.prompt_len, tokens=tokens,
               pairs=peers.global_batch, micro_batch=peers.micro_batch, steps=peers.steps,
               status="ok", error=None, time_s=None, tokens_per_s=None, peak_bytes=peak,
               reference_s=None, step_times_s=None)
    if "error" in result:
        # the peak a failed run reached is no result: kept apart, out of the ratios
        return {**row, "status": "failed", "error": result["error"], "peak_bytes": None,
                "peak_bytes_at_failure": peak}
    times = result["step_times_s"][peers.timed_from - 1:]
    if not times:
        return {**row, "status": "failed", "error": f"only {len(result['step_times_s'])} "
                                                    "steps were logged"}
    step = statistics.median(times)
    return {**row, "time_s": step, "tokens_per_s": tokens / step,
            "reference_s": result["reference_s"], "step_times_s": result["step_times_s"]}


def run_peers(settings: Settings, configs=CONFIGS) -> list[dict]:
    """One row per (completion length, entry of ``configs``)."""
    peers = PROFILES["quick" if settings.profile == "quick" else "full"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for completion_len in peers.completion_lens:
            case = tmp / f"T{completion_len}"
            case.mkdir()
            max_length = peers.prompt_len + completion_len + 16  # + chat template and EOS
            write_model(case / "model", peers.model, max_positions=max_length)
            write_pairs(case / "pairs.jsonl", peers.global_batch * peers.steps,
                        peers.prompt_len, completion_len)
            prepare_pairs(case / "pairs.jsonl", case / "data")
            for i, (trainer, loss, label, fields) in enumerate(configs):
                if trainer == "redi-trl" and not _redi_trl_installed():
                    missing = {"error": "redi.integrations.trl is not installed"}
                    rows.append({**_row(trainer, loss, label, completion_len, peers, missing,
                                        None), "status": "not available"})
                    continue
                spec = dict(trainer=trainer, loss=loss, model_dir=str(case / "model"),
                            data_dir=str(case / "data"), rows=str(case / "pairs.jsonl"),
                            out_dir=str(case / f"run{i}"), steps=peers.steps,
                            global_batch=peers.global_batch, micro_batch=peers.micro_batch,
                            max_length=max_length, beta=BETA[loss], gamma=SIMPO_GAMMA,
                            threads=settings.threads or peers.threads)
                spec = {**spec, "liger": False, **fields}
                result, peak = run_worker(spec, case / f"work{i}")
                rows.append(_row(trainer, loss, label, completion_len, peers, result, peak))
                print(f"  T={completion_len} {label} {loss}: {rows[-1]['status']}"
                      f"{'' if rows[-1]['error'] is None else ' ' + rows[-1]['error']}",
                      flush=True)
    add_ratios(rows, "redi", lambda r: r["trainer"] == "redi-train" and r["loss"] == "redi",
               match=("seq_len",), keys=("tokens_per_s", "peak_bytes"))
    return rows


def _describe(settings: Settings) -> str:
    p = PROFILES["quick" if settings.profile == "quick" else "full"]
    m = p.model
    return (f"CPU fp32, Qwen2 H={m.hidden} L={m.layers} V={m.vocab} tied, prompt {p.prompt_len} "
            f"+ completions T, {p.global_batch} pairs/step (micro {p.micro_batch}), "
            f"{p.steps} steps, median of steps {p.timed_from}-{p.steps}")


SECTION = Section(
    name="trainer-peers",
    describe=_describe,
    run=run_peers,
    columns=(Column("trainer", "impl", left=True), Column("loss", "loss", left=True),
             Column("T", "seq_len"), Column("status", "status", left=True),
             Column("tokens/s", "tokens_per_s", "{:.0f}"),
             Column("x REDI tok/s", "tokens_per_s_vs_redi", "{:.2f}"),
             Column("peak RSS MiB", "peak_bytes", "{:.0f}", scale=2**-20),
             Column("x REDI mem", "peak_bytes_vs_redi", "{:.2f}"),
             Column("reference s", "reference_s", "{:.1f}"),
             Column("error", "error", left=True)),
    plotted=False)


def main(argv=None) -> int:
    """Run the section for chosen completion lengths and configurations only (to measure
    them side by side in separate processes): ``python bench/trainer_peers.py --lengths 4096
    [--configs 0 3] --out DIR`` writes ``DIR/trainer-peers-T4096[-c0-3].json`` and prints
    the table."""
    import argparse

    from environment import environment
    from report import table, write_json
    from settings import profile

    p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", required=True)
    p.add_argument("--configs", type=int, nargs="+", default=list(range(len(CONFIGS))),
                   help="indices into CONFIGS (default: all)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    PROFILES["full"] = dataclasses.replace(PROFILES["full"],
                                           completion_lens=tuple(args.lengths))
    settings = profile("full", "cpu")
    env = environment("cpu")
    rows = run_peers(settings, [CONFIGS[i] for i in args.configs])
    args.out.mkdir(parents=True, exist_ok=True)
    name = "trainer-peers-" + "-".join(f"T{n}" for n in args.lengths)
    if args.configs != list(range(len(CONFIGS))):
        name += "-c" + "-".join(map(str, args.configs))
    name += ".json"
    write_json(args.out / name, env, settings, rows)
    print(table(SECTION, settings, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
