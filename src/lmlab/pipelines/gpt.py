"""Text in, text out for a trained GPT run (:class:`GPTGenerator`); load one with ``GPTRecipe.load(run_dir)``
or :func:`lmlab.load`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lmlab import checkpoint
from lmlab.data.tokens import TokenCodec
from lmlab.models.gpt import GPT


def _after(decode, last_prompt_id: int):
    """``decode`` of generated ids as they read after the prompt: SentencePiece-style decoders drop the space
    that starts a text ("▁world" alone -> "world"), which is wrong in the middle of one."""
    before = decode([last_prompt_id])

    def decode_after(ids):
        text = decode([last_prompt_id, *ids])
        return text[len(before):] if text.startswith(before) else decode(ids)

    return decode_after


class GPTGenerator:
    """Text in, text out for a trained GPT run: ``stream`` / ``generate`` as every lmlab Generator does.

    A prompt longer than the context keeps its last ``block_size`` tokens; the final event then says how many
    were dropped (``"prompt_truncated"``). Streaming holds back text that could still become a stop string.
    """

    model_type = "gpt"

    def __init__(self, model: GPT, codec: TokenCodec, run: Any = None, run_dir: Path | None = None):
        self.model = model.eval()
        self.codec = codec
        #: the run config (``lmlab.recipes.gpt.GPTRunConfig``) when loaded from a run directory
        self.run = run
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.use_cache = True

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike, device: str = "cpu") -> GPTGenerator:
        from lmlab import load  # the registry's recipe loads it (pipelines never import recipes)

        checkpoint.load_config(run_dir, "gpt")
        return load(run_dir, device)

    def info(self) -> dict:
        info = {
            "model_type": self.model_type,
            "vocab_size": self.codec.vocab_size,
            "parameters": self.model.num_parameters(),
            "tokenizer": self.codec.kind,
            "block_size": self.model.config.block_size,
            "architecture": dataclasses.asdict(self.model.config),
        }
        if self.run_dir is not None:
            saved = checkpoint.load_config(self.run_dir)
            info["trained_on"] = saved.get("corpus", {})
        return info

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ):
        """Yield ``{"text": piece}`` as tokens are sampled, then ``{"finish_reason", "prompt_tokens",
        "completion_tokens"}`` (plus ``"prompt_truncated": n`` when the prompt was cut to the context)."""
        from lmlab.generation import SamplingConfig, stream_generate

        cfg = SamplingConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=[stop] if isinstance(stop, str) else list(stop or []),
            seed=seed,
        )
        ids = self.codec.encode_prompt(prompt) if prompt else []
        ids = ids or self.codec.start_ids()
        ids, dropped = self.model.crop_prompt(ids)
        device = next(self.model.parameters()).device
        step = self.model.step_cached if self.use_cache else self.model.step_uncached

        def no_grad_step(input_ids, state):
            with torch.no_grad():
                return step(input_ids, state)

        extra = {"prompt_truncated": dropped} if dropped else None
        decode = self.codec.decode
        if self.codec.kind == "hf":  # a pretrained tokenizer: decode after the prompt's last token (see below)
            decode = _after(self.codec.decode, ids[-1])
        yield from stream_generate(no_grad_step, ids, cfg, decode, eos_id=self.codec.end_ids or None,
                                   extra_final=extra, device=device)

    def generate(self, prompt: str, **kwargs) -> dict:
        """``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}`` (completion only, stop trimmed)."""
        from lmlab.generation import collect_stream

        return collect_stream(self.stream(prompt, **kwargs))
