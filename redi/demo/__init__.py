"""``redi demo``: the main job on the built-in task (see ``redi.demo.run``)."""

from redi.demo.cli import main
from redi.demo.design import QUICK
from redi.demo.run import run_demo

__all__ = ["QUICK", "main", "run_demo"]
