"""The ``redi`` command line: ``redi <command> [args]``, one module per command.

Only the chosen command's module is imported, so ``redi prepare`` never loads the trainer.
Each module exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import sys
from importlib import import_module

# name -> (module with main(argv), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("redi.data.cli", "raw rows (OpenR1-Math-Raw, TRL) or the built-in task to "
                                 "sft.jsonl, pairs.jsonl, stats.json"),
}


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
    module, _ = COMMANDS[argv[0]]
    return import_module(module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
