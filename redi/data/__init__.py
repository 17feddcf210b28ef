"""Data: reading, the paper's OpenR1-Math-Raw rules, formatting, batching, the built-in task.

Modules (one job each):

* ``io``: rows from local JSONL/JSON/Parquet/Arrow files and saved datasets;
* ``validation``: row checks for the OpenR1 and TRL formats (``errors.DataError``);
* ``openr1``: the paper's filters and trace selection;
* ``prepare`` / ``cli``: ``redi prepare`` (sft.jsonl, pairs.jsonl, stats.json);
* ``tokenizer``: ``load_tokenizer`` (a local directory, or the built-in tokenizer);
* ``formatting``: chat templates, prompts, tokenization with shifted labels, truncation;
* ``tokenized``: sft/pair files to tokenized ``datasets.Dataset`` objects;
* ``batching``: padded and packed collators; ``sampler``: the length-grouped sampler;
* ``builtin_task``: the built-in addition task and its answer checker.

The names below are importable from ``redi.data`` directly (loaded on first use).
"""

from importlib import import_module

_EXPORTS = {
    "DataError": "redi.data.errors",
    "load_tokenizer": "redi.data.tokenizer",
    "Formatter": "redi.data.formatting",
    "IGNORE_INDEX": "redi.data.formatting",
    "OPENR1_MATH_PROMPT": "redi.data.formatting",
    "load_sft": "redi.data.tokenized",
    "load_pairs": "redi.data.tokenized",
    "tokenize_sft": "redi.data.tokenized",
    "tokenize_pairs": "redi.data.tokenized",
    "collate_sft": "redi.data.batching",
    "collate_pairs": "redi.data.batching",
    "make_collator": "redi.data.batching",
    "LengthGroupedBatchSampler": "redi.data.sampler",
    "prepare": "redi.data.prepare",
    "PrepareOptions": "redi.data.prepare",
    "prepare_builtin_task": "redi.data.prepare",
    "check_answer": "redi.data.builtin_task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'redi.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
