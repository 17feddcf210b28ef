"""The demo's evaluations of a trained model piece (its model: ``FOLDER/run/final``), each
a piece of its own in the model piece's folder (``redi.demo.pieces``: a rerun with other
k, temperature or max_new_tokens, or of another model, is refused, not served stale):

* ``val_greedy``: validation, one greedy sample per problem (the per-problem verdicts;
  ``curve_eval/step_N``: the same at a saved checkpoint, for the Stage-1 plateau rule and
  the Stage-2 curves);
* ``val_sampled`` / ``test``: k samples per problem at the test temperature (the test
  protocol): per-problem scores and the style metrics (``redi.demo.mechanism``);
* ``pair_logprobs``: the Stage-2 pairs' chosen and rejected per-token log-probs under the
  final model (``redi.demo.mechanism.pair_logprobs_per_token``).

``validation_cell`` gathers a model's validation figures: one cell of the sweep.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from redi.demo import mechanism, stats
from redi.demo.design import TEST_TEMPERATURE, DemoSize
from redi.demo.pieces import Piece, claim

FINAL = "final"
# Sequences generated at once: the tiny model's decoding is per-step overhead on a CPU, so a
# large batch is faster (200 problems x 4 samples: 9.5 s at 100, 5.8 s at 400, same samples)
GENERATION_BATCH = 400


def final_model(piece: Piece) -> Path:
    return piece.folder / "run" / FINAL


class Evaluator:
    """Evaluations on the data piece ``data`` at ``size``'s k and max_new_tokens."""

    def __init__(self, data: Piece, size: DemoSize):
        self.data, self.size = data, size

    def _samples(self, model: Piece, model_dir: Path, folder: Path, split: str, k: int,
                 temperature: float, step: int | str) -> Path:
        """The samples file of one evaluation piece (made unless a previous run finished it)."""
        from redi.eval.generation import SamplingSettings
        from redi.eval.runner import EvalOptions, evaluate

        claim(folder, {"piece": "evaluation", "split": split, "samples": k,
                       "temperature": temperature, "max_new_tokens": self.size.max_new_tokens,
                       "model": model.identity, "step": step, "data": self.data.identity})
        if not (folder / "summary.json").is_file():  # written last by evaluate
            options = EvalOptions(samples=k, prompt_style="plain", batch_size=GENERATION_BATCH,
                                  sampling=SamplingSettings(
                                      temperature=temperature,
                                      max_new_tokens=self.size.max_new_tokens))
            evaluate(str(model_dir), str(self.data.folder / f"{split}.jsonl"), str(folder),
                     "builtin", options, progress=False)
        return folder / "samples.jsonl"

    def _ids(self, split: str) -> list[str]:
        return [json.loads(line)["id"] for line in (self.data.folder / f"{split}.jsonl").open()]

    def greedy(self, model: Piece, step: int | str = FINAL) -> list[float]:
        """Per-problem validation verdicts (0/1) of the final model or of a checkpoint."""
        if step == FINAL:
            model_dir, folder = final_model(model), model.folder / "val_greedy"
        else:
            model_dir = model.folder / "curve" / f"step_{step:08d}"
            folder = model.folder / "curve_eval" / f"step_{step:08d}"
        samples = self._samples(model, model_dir, folder, "validation", 1, 0.0, step)
        return stats.per_problem_scores(samples, self._ids("validation"), 1)

    def sampled(self, model: Piece, split: str) -> tuple[list[float], dict]:
        """Per-problem scores of k samples at the test temperature, and the style metrics."""
        folder = model.folder / ("val_sampled" if split == "validation" else split)
        samples = self._samples(model, final_model(model), folder, split, self.size.samples,
                                TEST_TEMPERATURE, FINAL)
        return (stats.per_problem_scores(samples, self._ids(split), self.size.samples),
                mechanism.style_metrics(samples, self.size.samples))

    def pair_logprobs(self, model: Piece, pairs_dir: Path) -> dict:
        """The pairs of ``pairs_dir`` (a part of the data piece) scored by the final model."""
        from redi.files import atomic_write_text

        folder = model.folder / "pair_logprobs"
        claim(folder, {"piece": "pair_logprobs", "model": model.identity,
                       "data": self.data.identity,
                       "pairs": str(pairs_dir.relative_to(self.data.folder) / "pairs.jsonl"),
                       "scoring": mechanism.SCORING_RECIPE})
        result = folder / "logprobs.json"
        if not result.is_file():
            atomic_write_text(result, json.dumps(mechanism.pair_logprobs_per_token(
                final_model(model), pairs_dir / "pairs.jsonl")) + "\n")
        return json.loads(result.read_text())

    def curve(self, model: Piece) -> list[tuple[int, list[float]]]:
        """(step, per-problem validation verdicts) at each saved checkpoint of a finished
        run; the last checkpoint is the final model (``val_greedy``)."""
        from redi.train.checkpoint import list_checkpoints
        from redi.train.export import export_checkpoint
        from redi.train.run_id import stored_run_id

        run = model.folder / "run"
        checkpoints = list_checkpoints(run, stored_run_id(run))
        points = []
        for checkpoint in checkpoints[:-1]:
            step = int(checkpoint.name.split("_")[1])
            model_dir = model.folder / "curve" / f"step_{step:08d}"
            if not (model_dir / "config.json").is_file():
                export_checkpoint(checkpoint, model_dir)
            points.append((step, self.greedy(model, step)))
        return [*points, (int(checkpoints[-1].name.split("_")[1]), self.greedy(model))]

    def validation_cell(self, model: Piece, pairs_dir: Path) -> dict:
        """A model's validation figures (a sweep cell): sampled and greedy pass@1, the terse
        share and accuracy by style of the samples, the pairs' per-token log-probs."""
        scores, styles = self.sampled(model, "validation")
        logprobs = self.pair_logprobs(model, pairs_dir)
        return {"val_sampled_pass1": statistics.fmean(scores),
                "val_greedy": statistics.fmean(self.greedy(model)), **styles,
                "chosen_logp_per_token": logprobs["chosen"],
                "rejected_logp_per_token": logprobs["rejected"]}
