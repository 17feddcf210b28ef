"""Chat formatting and tokenization with loss masks.

A conversation is rendered with a chat template (the tokenizer's own, or
``DEFAULT_CHAT_TEMPLATE`` for tokenizers without one) and cut into segments: the text up to
each trained assistant message's generation prompt, and that message's turn. Segments are
tokenized separately and concatenated, so the prompt tokens are exactly those evaluation
feeds the model (``Formatter.encode_prompt``) and the mask boundary never falls inside a
token. An assistant turn ends at the template's end-of-turn token (``<|im_end|>`` for
ChatML; found by rendering a probe conversation); text the template puts after it (a
newline) is not trained, and a turn that has none gets the tokenizer's EOS appended.

Labels are already shifted for a causal LM: ``labels[t]`` is the token position ``t`` must
predict (``input_ids[t + 1]``) when that token belongs to a trained assistant turn (its
end-of-turn token included), else -100; the last position is always -100. Sequences end at
their last trained token.

Truncation (``max_prompt_length`` on the part before the first trained token, then
``max_length`` on the whole) keeps the end by default (``truncation="keep_end"``), or the
start (``"keep_start"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE_INDEX = -100

# The Open-R1 / lighteval math prompt (its double space after "clearly." included).
OPENR1_MATH_PROMPT = (
    "Solve the following math problem efficiently and clearly.  The last line of your response "
    "should be of the following format: 'Therefore, the final answer is: $\\boxed{ANSWER}$. "
    "I hope it is correct' (without quotes) where ANSWER is just the final number or "
    "expression that solves the problem. Think step by step before answering.\n\n{problem}"
)
PROMPT_STYLES = ("plain", "openr1")
TEMPLATES = ("auto", "tokenizer", "default")
TRUNCATION_SIDES = ("keep_end", "keep_start")
THINK_PREFIX = "<think>\n"

# For tokenizers without a chat template: "User:\n...\n\nAssistant:\n...<eos>\n\n".
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{- 'User:\\n' + message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- 'Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}"
    "{%- else %}{{- message['content'] + '\\n\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- 'Assistant:\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Encoded:
    """An untruncated tokenized conversation: ids, which of them are trained, and how many
    tokens come before the first trained one (the prompt)."""

    input_ids: list[int]
    trained: list[bool]
    prompt_length: int

    @property
    def completion_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming the option."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, not {value!r}")
    return value


def user_content(problem: str, prompt_style: str = "plain") -> str:
    """The user message for a problem: as is, or wrapped in the Open-R1 math prompt."""
    if check_choice("prompt_style", prompt_style, PROMPT_STYLES) == "openr1":
        return OPENR1_MATH_PROMPT.replace("{problem}", problem)
    return problem


def shift_labels(input_ids: Sequence[int], trained: Sequence[bool]) -> list[int]:
    """Causal-LM labels aligned with the inputs (see the module docstring)."""
    targets = zip(input_ids[1:], trained[1:], strict=True)
    labels = [tok if keep else IGNORE_INDEX for tok, keep in targets]
    return labels + [IGNORE_INDEX] if input_ids else []


def truncate(encoded: Encoded, max_length: int | None, max_prompt_length: int | None = None,
             side: str = "keep_end") -> tuple[list[int], list[bool]]:
    """Cut the prompt to max_prompt_length, then the whole to max_length, keeping one end."""
    check_choice("truncation", side, TRUNCATION_SIDES)
    ids, trained, cut = encoded.input_ids, encoded.trained, encoded.prompt_length
    if max_prompt_length is not None and cut > max_prompt_length:
        start = cut - max_prompt_length if side == "keep_end" else 0
        prompt = slice(start, start + max_prompt_length)
        ids, trained = ids[prompt] + ids[cut:], trained[prompt] + trained[cut:]
    if max_length is not None and len(ids) > max_length:
        window = slice(len(ids) - max_length, None) if side == "keep_end" else slice(max_length)
        ids, trained = ids[window], trained[window]
    return ids, trained


class Formatter:
    """Renders and tokenizes conversations and problems for one tokenizer.

    Args:
        tokenizer: a transformers tokenizer (``redi.data.load_tokenizer``).
        template: "auto" (the tokenizer's chat template, else the default one), "tokenizer"
            (its own; an error if it has none) or "default" (``DEFAULT_CHAT_TEMPLATE``).
        prompt_style: how ``problem_messages`` words a problem: "plain" or "openr1".
        max_length, max_prompt_length, truncation: see ``truncate`` (None: no limit).
    """

    def __init__(self, tokenizer, template: str = "auto", prompt_style: str = "plain",
                 max_length: int | None = None, max_prompt_length: int | None = None,
                 truncation: str = "keep_end"):
        check_choice("template", template, TEMPLATES)
        check_choice("prompt_style", prompt_style, PROMPT_STYLES)
        check_choice("truncation", truncation, TRUNCATION_SIDES)
        if template == "tokenizer" and not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template; use template='default'")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token")
        self.tokenizer = tokenizer
        self.chat_template = (tokenizer.chat_template if template != "default" and
                              tokenizer.chat_template else DEFAULT_CHAT_TEMPLATE)
        self.prompt_style = prompt_style
        self.max_length, self.max_prompt_length = max_length, max_prompt_length
        self.truncation = truncation
        self.turn_end_id = self._find_turn_end()
        # over the sequences ``finish`` has made: how many were cut, how many of those kept
        # no trained token (a prompt as long as max_length), the longest kept
        self.cut_sequences, self.untrained, self.longest = 0, 0, 0

    @property
    def stop_token_ids(self) -> list[int]:
        """Token ids that end a generation: the end-of-turn token and the EOS."""
        return sorted({self.turn_end_id, self.tokenizer.eos_token_id})

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False,
            add_generation_prompt=add_generation_prompt)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _find_turn_end(self) -> int:
        """The special token the template closes an assistant turn with (else the EOS)."""
        probe = [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}]
        head = self.render(probe[:1], add_generation_prompt=True)
        after_content = self.render(probe)[len(head):].split("2", 1)[-1]
        special = set(self.tokenizer.all_special_ids) - {self.tokenizer.unk_token_id}
        ids = self._tokenize([after_content])[0]
        return next((t for t in ids if t in special), self.tokenizer.eos_token_id)

    # ---- problems (evaluation) -------------------------------------------------------
    def problem_messages(self, problem: str) -> list[dict]:
        """The single user message a problem becomes, in this formatter's prompt style."""
        return [{"role": "user", "content": user_content(problem, self.prompt_style)}]

    def generation_prompt(self, problem: str, think: bool = True) -> str:
        """The text a model continues to solve ``problem`` (``<think>\\n`` forced if think)."""
        return self.render(self.problem_messages(problem), add_generation_prompt=True) + (
            THINK_PREFIX if think else "")

    def encode_prompt(self, problem: str, think: bool = True) -> list[int]:
        """``generation_prompt`` as token ids, split as training splits it (prompt, then the
        ``<think>\\n`` that starts a trace)."""
        texts = [self.render(self.problem_messages(problem), add_generation_prompt=True)]
        ids = self._tokenize(texts + ([THINK_PREFIX] if think else []))
        return [t for part in ids for t in part]

    # ---- conversations (training) ----------------------------------------------------
    def _segments(self, messages: list[dict], loss_from: int) -> list[tuple[str, bool]]:
        """(text, is a trained assistant turn) pieces whose concatenation is the rendering."""
        segments, done = [], ""
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or i < loss_from:
                continue
            head = self.render(messages[:i], add_generation_prompt=True)
            full = self.render(messages[: i + 1])
            if not (head.startswith(done) and full.startswith(head)):
                raise ValueError("the chat template does not render a conversation as its "
                                 "prompt followed by the assistant turn; use template='default'")
            if message["content"].strip() not in full[len(head):]:
                raise ValueError("the chat template changes assistant messages (it may drop "
                                 "<think> sections); use template='default'")
            segments += [(head[len(done):], False), (full[len(head):], True)]
            done = full
        return segments

    def encode_conversations(self, conversations: Sequence[tuple[list[dict], int]]
                             ) -> list[Encoded]:
        """Tokenize (messages, loss_from) conversations in one tokenizer call; assistant
        messages at index >= loss_from are trained. Untruncated."""
        all_segments = [self._segments(m, loss_from) for m, loss_from in conversations]
        token_lists = iter(self._tokenize([text for segs in all_segments for text, _ in segs]))
        encoded = []
        for segments in all_segments:
            ids, trained, prompt_length, end_of_last_turn = [], [], None, 0
            for _, is_turn in segments:
                tokens = next(token_lists)
                if is_turn:
                    prompt_length = len(ids) if prompt_length is None else prompt_length
                    end = _last_index(tokens, self.turn_end_id)
                    if end is None:
                        tokens, end = tokens + [self.tokenizer.eos_token_id], len(tokens)
                    ids += tokens[: end + 1]
                    trained += [True] * (end + 1)
                    end_of_last_turn = len(ids)
                    tokens = tokens[end + 1:]  # what the template puts after the turn's end
                ids += tokens
                trained += [False] * len(tokens)
            if prompt_length is None:
                raise ValueError("no assistant message to train on")
            encoded.append(Encoded(ids[:end_of_last_turn], trained[:end_of_last_turn],
                                   prompt_length))
        return encoded

    def finish(self, encoded: Encoded) -> dict[str, list[int]]:
        """Truncate and shift: the ``input_ids`` and ``labels`` a batch is made of."""
        ids, trained = truncate(encoded, self.max_length, self.max_prompt_length,
                                self.truncation)
        cut = len(ids) < len(encoded.input_ids)
        self.cut_sequences += cut
        self.untrained += cut and not any(trained[1:])
        self.longest = max(self.longest, len(ids))
        return {"input_ids": ids, "labels": shift_labels(ids, trained)}

    def encode_sft(self, conversations: Sequence[list[dict]]) -> list[dict[str, list[int]]]:
        """SFT examples (every assistant message trained) as input_ids and labels."""
        encoded = self.encode_conversations([(m, 0) for m in conversations])
        return [self.finish(e) for e in encoded]

    def encode_pairs(self, pairs: Sequence[tuple[list[dict], list[dict], list[dict]]]
                     ) -> list[dict[str, list[int]]]:
        """Preference pairs (prompt, chosen, rejected message lists) as ``chosen_input_ids``,
        ``chosen_labels``, ``rejected_input_ids``, ``rejected_labels``."""
        conversations = [(prompt + answer, len(prompt))
                         for prompt, chosen, rejected in pairs for answer in (chosen, rejected)]
        encoded = self.encode_conversations(conversations)
        examples = []
        for chosen, rejected in zip(encoded[0::2], encoded[1::2], strict=True):
            example = {}
            for name, e in (("chosen", chosen), ("rejected", rejected)):
                example.update({f"{name}_{k}": v for k, v in self.finish(e).items()})
            examples.append(example)
        return examples


def _last_index(values: list[int], target: int) -> int | None:
    for i in range(len(values) - 1, -1, -1):
        if values[i] == target:
            return i
    return None
