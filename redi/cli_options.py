"""Command-line options shared by the ``redi`` commands: one spelling per concept, the same
words as the trainer's config keys (``--output-dir`` is ``output_dir``,
``--max-prompt-length`` is ``max_prompt_length``), and old spellings kept working for one
release with a deprecation message."""

from __future__ import annotations

import argparse
import sys


class _DeprecatedSpelling(argparse.Action):
    """Stores like the new option, after telling the user its new name."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated and will be removed in the next "
              f"release; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_option(parser, flag: str, *, renamed_from: str | None = None, **kwargs):
    """``parser.add_argument(flag, **kwargs)``, plus ``renamed_from`` as a hidden alias that
    warns. A required option stays required in either spelling."""
    required = kwargs.pop("required", False)
    dest = flag.lstrip("-").replace("-", "_")
    if renamed_from is None:
        return parser.add_argument(flag, dest=dest, required=required, **kwargs)
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(flag, dest=dest, **kwargs)
    alias = {k: v for k, v in kwargs.items() if k in ("type", "metavar")}
    group.add_argument(renamed_from, dest=dest, action=_DeprecatedSpelling, new_flag=flag,
                       help=argparse.SUPPRESS, **alias)
    if "default" in kwargs:
        parser.set_defaults(**{dest: kwargs["default"]})


def add_output_dir(parser, help: str):
    """``--output-dir`` (was ``--output``): the directory a command writes."""
    add_option(parser, "--output-dir", renamed_from="--output", required=True, help=help)
