"""Tokenizers: any local Hugging Face tokenizer directory, or the built-in one.

The built-in tokenizer is a byte-level BPE (so it encodes any text) with single-digit
number tokens (" 7" and "7") and a few hundred entries, trained with ``tokenizers`` on the built-in
task's text. It is stored in ``redi/data/builtin-tokenizer`` (``tokenizer.json``,
``tokenizer_config.json``, ``chat_template.jinja``), so it needs no download, loads with
``transformers.AutoTokenizer.from_pretrained(dir)`` and ships with exported models.
Its chat template is ChatML (``<|im_start|>role\\n...<|im_end|>\\n``), ``<|im_end|>`` is
the EOS and ``<|endoftext|>`` the padding; ``<think>`` and ``</think>`` are single tokens.
"""

from __future__ import annotations

from pathlib import Path

from redi.data.errors import DataError

BUILTIN_TOKENIZER_DIR = Path(__file__).parent / "builtin-tokenizer"
BUILTIN_VOCAB_SIZE = 320
# at least one of these: the serialized tokenizer, or a config that names its class
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def load_tokenizer(path: str | Path | None = None):
    """A transformers tokenizer from a local directory (None: the built-in one).

    Never touches the network. A tokenizer without a padding token pads with its EOS.
    A directory with a ``tokenizer.json`` is loaded exactly as serialized: AutoTokenizer
    would pick the tokenizer class from a model ``config.json`` beside it (an exported
    Qwen2 model gets ``Qwen2Tokenizer``), whose own pre-tokenizer silently replaces the
    saved one and changes every token id.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(BUILTIN_TOKENIZER_DIR if path is None else path)
    if not directory.is_dir():
        raise DataError(str(directory), None, None, "missing_file",
                        "no such tokenizer directory")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(str(directory), None, None, "missing_file",
                        f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in this directory")
    loader = PreTrainedTokenizerFast if (directory / "tokenizer.json").is_file() else AutoTokenizer
    tokenizer = loader.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


ROUND_TRIP_PROBE = ("Solve 12 + 7.\n\n<think>\nFirst,  add the ones.\n</think>\n"
                    "The answer is $\\boxed{19}$.")


def check_round_trip(tokenizer, texts=(), limit: int = 8, chars: int = 2000) -> None:
    """DataError naming the tokenizer unless decode(encode(text)) == text for a probe and
    the first ``limit`` of ``texts`` (each cut to ``chars``): a tokenizer that loses text
    (no decoder, a normalizer) would train on, or grade, something else than the data."""
    name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    for text in [ROUND_TRIP_PROBE, *list(texts)[:limit]]:
        text = text[:chars]
        ids = tokenizer.encode(text, add_special_tokens=False)
        back = tokenizer.decode(ids, skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)
        if back != text:
            at = next((i for i, (a, b) in enumerate(zip(text, back)) if a != b),
                      min(len(text), len(back)))
            raise DataError(str(name), None, None, "tokenizer_round_trip",
                            f"tokenizer does not give text back: decode(encode(text)) differs "
                            f"from the text at character {at} ({text[at:at + 20]!r} became "
                            f"{back[at:at + 20]!r}); use a tokenizer with a decoder")


def auto_tokenizer_mismatch(tokenizer, directory: str | Path) -> str | None:
    """None if ``AutoTokenizer.from_pretrained(directory)`` gives ``tokenizer``'s ids on a
    probe text, else a warning naming the class it builds. transformers 5 picks the class
    of some model types (qwen2 among them) from ``config.json`` and rebuilds that class's
    own pre-tokenizer around the saved vocabulary, whatever ``tokenizer_config.json`` says:
    such a directory loads right only with ``load_tokenizer`` (or
    ``PreTrainedTokenizerFast.from_pretrained``)."""
    from transformers import AutoTokenizer

    try:
        auto = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as err:
        return f"AutoTokenizer cannot load {directory} ({err})"
    probe = ROUND_TRIP_PROBE
    if auto.encode(probe, add_special_tokens=False) == tokenizer.encode(
            probe, add_special_tokens=False):
        return None
    return (f"AutoTokenizer.from_pretrained({directory}) builds a {type(auto).__name__} that "
            "tokenizes differently from the training tokenizer (transformers picks it from "
            "the model type); load the tokenizer with PreTrainedTokenizerFast.from_pretrained "
            "or redi.data.tokenizer.load_tokenizer")


def string_values(record, limit: int = 4) -> list[str]:
    """Up to ``limit`` strings found in a JSON-like record (for ``check_round_trip``)."""
    found, stack = [], [record]
    while stack and len(found) < limit:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


def build_builtin_tokenizer(vocab_size: int = BUILTIN_VOCAB_SIZE):
    """Train the built-in tokenizer from scratch (how the stored asset was made)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from redi.data.builtin_task import generate_rows

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # the rows the stored asset was trained on (drawn before the validation split existed)
    corpus = [text for row in generate_rows(2000, seed=0, excluded=("test",))
              for text in (row["problem"], *row["generations"])]
    corpus += ["system", "user", "assistant"]
    backend.train_from_iterator(corpus, trainer)
    backend.add_tokens([AddedToken("<think>", special=False, normalized=False),
                        AddedToken("</think>", special=False, normalized=False)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
