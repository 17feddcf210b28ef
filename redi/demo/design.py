"""The demo's fixed design: the methods and their recipes, the labels the tables use, the
learning-rate grid, the selection rule's metric, the sampling of the test protocol, the
sizes (``FULL``, ``QUICK``) and the prediction written down before any test figure;
``redi.demo.run`` runs it, ``redi.demo.report`` writes it up, ``redi.demo.cli`` picks from it.
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass

from redi.data import builtin_task

RECIPES = importlib.resources.files("redi.recipes")
METHODS = ("sft", "sft_more", "sft_continued", "redi", "redi_symmetric", "dpo", "simpo",
           "redi_floor")
BASIC = ("sft_more", "sft_continued", "redi")  # Stage-2 methods of a plain `make demo`
CONTROLS = ("sft", "sft_more", "sft_continued")  # paired as redi minus each; others minus redi
LR_GRID = (1e-6, 1e-5, 3e-5, 1e-4, 3e-4)  # paper: Stage 2 at 1/50 of Stage 1 (4e-5 here)
TEST_TEMPERATURE = 0.6  # validation's sampled pass@1 draws the same way (the test protocol)
SELECTION_METRIC = "val_sampled_pass1"
USABLE_WINDOW = 0.02  # a rate is usable within 2 points of the method's best validation
# Table labels; "{field}" is filled from the method's recipe (label()).
LABELS = {"sft": "SFT only (Stage 1)",
          "sft_more": "more SFT (token mean, pairs' chosen traces)",
          "sft_continued": "continued SFT (alpha {alpha})",
          "redi": "REDI (alpha {alpha})", "redi_symmetric": "symmetric REDI (alpha {alpha})",
          "dpo": "DPO", "simpo": "SimPO",
          "redi_floor": "REDI (alpha {alpha}, floor {negative_floor})"}
# Issue 26's section "Pre-registered before any test figure", verbatim.
PREREGISTERED = (
    "Prediction on `styles`, 3 seeds, test (400 problems, k=4): REDI minus `sft_more` at "
    "least +5 points and called; REDI minus `sft` called positive; the terse share falls "
    "under REDI and not under `sft_more`; REDI's usable learning-rate window (rates within 2 "
    "points of its best validation figure) at least as wide as DPO's and SimPO's. Falsified "
    "if: the model teacher's terse error rate is not at least twice the verbose one (then "
    "fix the teacher, not the analysis); the terse share falls without an accuracy gain; or "
    "three times more `sft_more` steps also lower the terse share. For `redi_floor`: "
    "collapse (validation under half its best) starts at a larger rate than REDI's, with no "
    "loss at REDI's chosen rate. Report the figures whatever they are.")


@dataclass(frozen=True)
class DemoSize:
    problems: int = builtin_task.DEFAULT_PROBLEMS  # training problems (teacher rows)
    validation: int = builtin_task.DEFAULT_VALIDATION
    test: int = builtin_task.DEFAULT_TEST
    stage1_epochs: float = 24.0  # train loss ~0.002 at the end; validation curve in results
    stage1_points: int = 8  # validation checkpoints over Stage 1 (the plateau rule)
    stage2_epochs: float = 1.0
    stage2_points: int = 3  # checkpoints over Stage 2 (the curves)
    samples: int = 4  # k for the test table and validation's sampled pass@1
    max_new_tokens: int = 160


FULL = DemoSize()
QUICK = DemoSize(problems=200, validation=8, test=8, stage1_epochs=1.0, stage1_points=2,
                 stage2_epochs=0.5, stage2_points=2, samples=2, max_new_tokens=48)


def output_dir(full: bool, quick: bool) -> str:
    """The default output directory of a mode: each its own, so no mode reuses another's."""
    return "runs/demo-quick" if quick else "runs/demo-full" if full else "runs/demo"


def recipe_file(method: str):
    return RECIPES / f"tiny_{method}.yaml"


def recipe_value(method: str, key: str):
    """A value of the method's committed recipe (e.g. the chosen learning rate)."""
    from redi.train.config import build_config

    return getattr(build_config(recipe_file(method)), key)


def recipe_settings(method: str, overridden: tuple[str, ...]) -> dict:
    """The method's recipe as a piece records it: ``{"recipe.KEY": value}`` for every
    setting that differs from the trainer's defaults, except the ``overridden`` ones (the
    demo sets those itself and records them under their own names)."""
    from dataclasses import asdict

    from redi.train.config import TrainConfig, build_config

    defaults = asdict(TrainConfig())
    return {f"recipe.{key}": value
            for key, value in asdict(build_config(recipe_file(method))).items()
            if key not in overridden and value != defaults[key]}


def label(method: str) -> str:
    """The method's name in tables and plots, with the values its recipe trains with."""
    fields = re.findall(r"{(\w+)}", LABELS[method])
    return LABELS[method].format(**{f: f"{recipe_value(method, f):g}" for f in fields})
