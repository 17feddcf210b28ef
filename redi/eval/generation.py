"""Sampling completions: Hugging Face ``generate`` (batched, KV cache) or vLLM when installed.

Both take finished prompt strings (chat template applied, any forced ``<think>`` start
included) and one seed per request, and return, per request, the generated text only. A
request's draw depends on its seed alone (not on its batch mates or on how many requests came
before it), so an evaluation that resumes after a kill samples what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper


@dataclass(frozen=True)
class SamplingSettings:
    """How completions are drawn; ``temperature`` 0 is greedy decoding. A NaN, infinite or
    negative temperature (which sampled greedily, unsaid) or a ``top_p`` outside (0, 1] is
    a ValueError."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    seed: int = 0

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got "
                             f"{self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_seed(seed: int, problem_id: str, sample: int) -> int:
    """The seed of sample ``sample`` of problem ``problem_id`` in a run seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}\0{problem_id}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # below 2**63: fits every API's int64


class SeededSampler(LogitsProcessor):
    """Temperature and nucleus sampling with one random generator per row.

    ``generate`` draws a batch's tokens from one shared generator, so a row's tokens depend on
    its batch mates. Here each row r draws from softmax(top_p(scores / T)) with its own
    generator, seeded with ``seeds[r]``, and the returned scores are 0 at the drawn token and
    -inf elsewhere: ``generate`` then runs greedy and takes exactly that token.
    """

    def __init__(self, settings: SamplingSettings, seeds: list[int], device: torch.device):
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(settings.temperature)])
        if settings.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(settings.top_p))
        self.generators = [torch.Generator(device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        probs = torch.softmax(self.warpers(input_ids, scores).float(), dim=-1)
        drawn = torch.stack([torch.multinomial(p, 1, generator=g)
                             for p, g in zip(probs, self.generators, strict=True)])
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


def vllm_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


class HFGenerator:
    """Left-padded batches through ``model.generate`` with the KV cache."""

    def __init__(self, model_dir: str, batch_size: int = 32, device: str | None = None):
        from transformers import AutoModelForCausalLM

        from redi.data.tokenizer import load_tokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.padding_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, local_files_only=True).to(self.device).eval()
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, prompts: list[str], settings: SamplingSettings, seeds: list[int],
                 stop_token_ids: list[int]) -> list[str]:
        """One completion per prompt, ending at a stop token; prompt i's draw depends on
        ``seeds[i]`` alone (temperature 0: greedy, seeds unused)."""
        outputs = []
        for start in range(0, len(prompts), self.batch_size):
            stop = start + self.batch_size
            enc = self.tokenizer(prompts[start:stop], return_tensors="pt",
                                 padding=True, add_special_tokens=False).to(self.device)
            sampler = ([SeededSampler(settings, seeds[start:stop], self.device)]
                       if settings.temperature > 0 else [])
            tokens = self.model.generate(
                **enc, do_sample=False, logits_processor=LogitsProcessorList(sampler),
                max_new_tokens=settings.max_new_tokens, temperature=None, top_p=None,
                top_k=None, eos_token_id=stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id)
            new = tokens[:, enc["input_ids"].shape[1]:]
            outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs


class VLLMGenerator:
    """vLLM's continuous batching (GPU only; used when installed)."""

    def __init__(self, model_dir: str):
        from vllm import LLM

        self.llm = LLM(model=model_dir)

    def generate(self, prompts: list[str], settings: SamplingSettings, seeds: list[int],
                 stop_token_ids: list[int]) -> list[str]:
        from vllm import SamplingParams

        params = [SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                                 max_tokens=settings.max_new_tokens, seed=seed,
                                 stop_token_ids=stop_token_ids) for seed in seeds]
        return [r.outputs[0].text for r in self.llm.generate(prompts, params)]


def make_generator(backend: str, model_dir: str, batch_size: int):
    if backend == "vllm":
        if not vllm_available():
            raise ValueError("--backend vllm needs a CUDA machine with vllm installed")
        return VLLMGenerator(model_dir)
    return HFGenerator(model_dir, batch_size)
