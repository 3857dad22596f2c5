"""``SeqGANGenerator``: the pipeline of a trained SeqGAN run (unconditional ``sample``; ``stream``/``generate``
continuing a prompt, through :func:`lmlab.generation.stream_generate`)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lmlab.data.codec import Codec
from lmlab.errors import ConfigError
from lmlab.models.textgan import SeqGAN, sample_many


class SeqGANGenerator:
    """Text in, text out for a SeqGAN generator. Build it with :meth:`lmlab.recipes.gan.GANRecipe.load`."""

    model_type = "seqgan"

    def __init__(
        self, model: SeqGAN, codec: Codec, trained_on: str = "", run_dir: str | Path | None = None
    ) -> None:
        self.model = model
        self.codec = codec
        self.trained_on = trained_on
        self.run_dir = run_dir

    def info(self) -> dict:
        m = self.model.config
        return {
            "model_type": self.model_type,
            "vocab_size": m.vocab_size,
            "max_len": m.max_len,
            "parameters": sum(p.numel() for p in self.model.generator.parameters()),
            "discriminator_parameters": sum(p.numel() for p in self.model.discriminator.parameters()),
            "trained_on": self.trained_on,
        }

    def sample(self, n: int = 20, temperature: float = 1.0, seed: int | None = None) -> list[str]:
        """``n`` sentences drawn from scratch (temperature 0: greedy)."""
        if n < 1:
            raise ConfigError(f"-n must be >= 1, got {n}")
        if temperature < 0 or not math.isfinite(temperature):
            raise ConfigError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
        seqs = sample_many(self.model.generator, n, temperature, seed)
        return [self.codec.decode(s) for s in seqs.tolist()]

    @torch.no_grad()
    def stream(
        self,
        prompt: str = "",
        max_new_tokens: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> Iterator[dict]:
        """``{"text": piece}`` events, then ``{"finish_reason", "prompt_tokens", "completion_tokens"}``.

        The generator reads the start token, then the prompt; ``<eos>`` and ``<pad>`` both end the output;
        ``max_new_tokens`` 0 means ``model.max_len``."""
        from lmlab.generation import SamplingConfig, stream_generate

        sc = SamplingConfig(
            max_new_tokens=max_new_tokens or self.model.config.max_len,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            stop=list(stop),
            seed=seed,
        )
        g = self.model.generator
        ids = self.codec.encode(prompt)
        start = [g.config.start_id, *ids]

        def step(inputs: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
            # first call: prime with the start token + prompt, one token at a time (as in training's sampling)
            tokens = start if state is None else inputs[0].tolist()
            logits = None
            for t in tokens:
                logits, state = g.step(torch.tensor([t], device=g.head.weight.device), state)
            return logits, state  # (1, V)

        # the loop's prompt doubles as the repetition-penalty history: the prompt, or the start token alone
        history = ids or [g.config.start_id]
        yield from stream_generate(
            step, history, sc, self.codec.decode, eos_id=self.codec.end_ids or None,
            extra_final={"prompt_tokens": len(ids)}, device=g.head.weight.device,
        )

    def generate(self, prompt: str = "", **kwargs: Any) -> dict:
        from lmlab.generation import collect_stream

        return collect_stream(self.stream(prompt, **kwargs))
