"""The ``redi`` command line: ``redi <command> [args]``, one module per command.

Only the chosen command's module is imported, so ``redi prepare`` never loads the trainer.
Each entry names a ``module:function`` taking ``argv: list[str]`` and returning the exit
status.
"""

from __future__ import annotations

import sys
from importlib import import_module

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("redi.data.cli:main", "raw rows (OpenR1-Math-Raw, TRL) or the built-in task to "
                                      "sft.jsonl, pairs.jsonl, stats.json"),
    "sft": ("redi.train.cli:sft_main", "Stage 1: SFT on the correct traces (FSDP2)"),
    "train": ("redi.train.cli:train_main", "Stage 2: REDI, DPO or SimPO on trace pairs (FSDP2)"),
    "eval": ("redi.eval.cli:main", "pass@1 (with standard error) and pass@k on a benchmark"),
    "plan": ("redi.train.cli:plan_main", "peak memory per device of a sft/train config, "
                                         "without loading weights; what would make it fit"),
    "export": ("redi.train.cli:export_main",
               "a training checkpoint to a Hugging Face model directory"),
    "demo": ("redi.demo.cli:main",
             "the main job: built-in task, SFT, REDI, evaluation, table, plot"),
}

# The optional-dependency group (pyproject.toml) each command needs beyond the core install.
EXTRAS = {"prepare": "data", "sft": "train", "train": "train", "eval": "eval",
          "export": "train", "demo": "demo", "plan": "train"}


def _usage() -> str:
    lines = ["usage: redi <command> [args]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`redi <command> --help` lists a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"redi: unknown command {argv[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, function = COMMANDS[argv[0]][0].split(":")
    try:
        command = getattr(import_module(module), function)
    except ModuleNotFoundError as error:
        extra = EXTRAS[argv[0]]
        print(f"redi {argv[0]}: needs the '{extra}' extra ({error.name} is not installed): "
              f"pip install 'redi[{extra}]'", file=sys.stderr)
        return 2
    return command(argv[1:])


def run() -> None:
    """The console-script and ``python -m redi.cli`` entry: ``main`` as a process."""
    status = main()
    distributed = sys.modules.get("redi.train.distributed")  # loaded iff the command used it
    if distributed is not None:
        distributed.exit_process(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
