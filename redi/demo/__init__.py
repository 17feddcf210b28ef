"""``redi demo``: the main job on the built-in task (see ``redi.demo.run``)."""

from redi.demo.run import QUICK, main, run_demo

__all__ = ["QUICK", "main", "run_demo"]
