"""Sampling completions: Hugging Face ``generate`` (batched, KV cache) or vLLM when installed.

Both take finished prompt strings (chat template applied, any forced ``<think>`` start
included) and return, per request, the generated text only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32768
    seed: int = 0


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
    def generate(self, prompts: list[str], settings: SamplingSettings, seed: int,
                 stop_token_ids: list[int]) -> list[str]:
        """One completion per prompt, ending at a stop token; ``seed`` makes the draw
        repeatable."""
        outputs = []
        sample = settings.temperature > 0
        for start in range(0, len(prompts), self.batch_size):
            torch.manual_seed(seed + start)
            enc = self.tokenizer(prompts[start:start + self.batch_size], return_tensors="pt",
                                 padding=True, add_special_tokens=False).to(self.device)
            tokens = self.model.generate(
                **enc, do_sample=sample, max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature if sample else None,
                top_p=settings.top_p if sample else None, top_k=None,
                eos_token_id=stop_token_ids, pad_token_id=self.tokenizer.pad_token_id)
            new = tokens[:, enc["input_ids"].shape[1]:]
            outputs += self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return outputs


class VLLMGenerator:
    """vLLM's continuous batching (GPU only; used when installed)."""

    def __init__(self, model_dir: str):
        from vllm import LLM

        self.llm = LLM(model=model_dir)

    def generate(self, prompts: list[str], settings: SamplingSettings, seed: int,
                 stop_token_ids: list[int]) -> list[str]:
        from vllm import SamplingParams

        # one seed per request: repeated prompts (the k samples of a problem) must differ
        params = [SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                                 max_tokens=settings.max_new_tokens, seed=seed + i,
                                 stop_token_ids=stop_token_ids) for i in range(len(prompts))]
        return [r.outputs[0].text for r in self.llm.generate(prompts, params)]


def make_generator(backend: str, model_dir: str, batch_size: int):
    if backend == "vllm":
        if not vllm_available():
            raise ValueError("--backend vllm needs a CUDA machine with vllm installed")
        return VLLMGenerator(model_dir)
    return HFGenerator(model_dir, batch_size)
