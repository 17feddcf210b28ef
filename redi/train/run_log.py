"""Training logs on the main process: a progress bar (tokens/s, ETA), one JSON line of
metrics per logged step in ``output_dir/metrics.jsonl`` (a resumed run first drops the
lines after its checkpoint's step), and optionally TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tqdm import tqdm

from redi.files import atomic_write_text


class RunLog:
    def __init__(self, output_dir, total_steps: int, start_step: int, enabled: bool,
                 progress: bool, tensorboard: bool, description: str):
        self.enabled = enabled
        self.bar = None
        self.writer = None
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        keep_steps_up_to(out / "metrics.jsonl", start_step)
        self.jsonl = open(out / "metrics.jsonl", "a", buffering=1)  # noqa: SIM115
        if progress:
            self.bar = tqdm(total=total_steps, initial=start_step, desc=description,
                            unit="step", dynamic_ncols=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))

    def step(self, step: int, metrics: dict):
        """Record one optimizer step's metrics (plain floats)."""
        if not self.enabled:
            return
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self.jsonl.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}",
                                 tok_s=f"{metrics['tokens_per_s']:.0f}", refresh=False)

    def message(self, text: str):
        if self.enabled:
            (self.bar.write if self.bar is not None else print)(text)

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.jsonl.close()


def keep_steps_up_to(path: Path, step: int) -> None:
    """Drop the records after ``step`` (logged by a run that went further than the
    checkpoint it is resumed from), so that every step appears once."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line)["step"] > step:
                break
        except (ValueError, KeyError, TypeError):  # a line cut short by a kill
            break
        kept.append(line)
    atomic_write_text(path, "".join(kept))


def _plain(value):
    return float(value) if hasattr(value, "__float__") else value
