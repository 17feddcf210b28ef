"""The demo's fixed design: the methods and their recipes, the labels the tables use, the
learning-rate grid, the test temperature and the two sizes (``FULL``, ``QUICK``);
``redi.demo.run`` runs it, ``redi.demo.report`` writes it up, ``redi.demo.cli`` picks from it.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

from redi.data import builtin_task

RECIPES = importlib.resources.files("redi.recipes")
METHODS = ("sft", "sft_continued", "redi", "redi_symmetric", "dpo", "simpo")
BASIC = ("sft_continued", "redi")  # Stage-2 methods of a plain `make demo`
LR_GRID = (1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # paper: Stage 2 at 1/50 of Stage 1 (4e-5 here)
TEST_TEMPERATURE = 0.6
# Table labels; "{alpha}" is filled from the method's recipe (label()).
LABELS = {"sft": "SFT only (Stage 1)", "sft_continued": "continued SFT (alpha {alpha})",
          "redi": "REDI (alpha {alpha})", "redi_symmetric": "symmetric REDI (alpha {alpha})",
          "dpo": "DPO", "simpo": "SimPO"}


@dataclass(frozen=True)
class DemoSize:
    problems: int = builtin_task.DEFAULT_PROBLEMS  # training problems (teacher rows)
    validation: int = builtin_task.DEFAULT_VALIDATION
    test: int = builtin_task.DEFAULT_TEST
    stage1_epochs: float = 24.0  # train loss ~0.002 at the end; validation curve in results
    stage1_points: int = 8  # validation checkpoints over Stage 1 (the plateau rule)
    stage2_epochs: float = 1.0
    stage2_points: int = 3  # checkpoints over Stage 2 (the curves)
    samples: int = 4  # k for the test table
    max_new_tokens: int = 160


FULL = DemoSize()
QUICK = DemoSize(problems=200, validation=8, test=8, stage1_epochs=1.0, stage1_points=2,
                 stage2_epochs=0.5, stage2_points=2, samples=2, max_new_tokens=48)


def recipe_value(method: str, key: str):
    """A value of the method's committed recipe (e.g. the chosen learning rate)."""
    from redi.train.config import build_config

    return getattr(build_config(RECIPES / f"tiny_{method}.yaml"), key)


def label(method: str) -> str:
    """The method's name in tables and plots, with the alpha its recipe trains with."""
    if "{alpha}" not in LABELS[method]:
        return LABELS[method]
    return LABELS[method].format(alpha=f"{recipe_value(method, 'alpha'):g}")


