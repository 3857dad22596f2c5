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
from lmlab.chat import CHAT_FILE, CHATML_TOKENS, ChatFormat
from lmlab.data.tokens import TokenCodec
from lmlab.errors import ChatTemplateError
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
        #: how this model chats (:class:`lmlab.chat.ChatFormat`): the run's ``chat.json``, else ChatML when the
        #: tokenizer has its tokens, else None until :meth:`set_chat_template` gives one
        self.chat_format: ChatFormat | None = None
        #: where :attr:`chat_format`'s template came from ("chat.json", "default: chatml", "--template X"), or None
        self.chat_template_source: str | None = None
        saved = ChatFormat.load(self.run_dir) if self.run_dir is not None else None
        if saved is not None:
            self.chat_format, self.chat_template_source = saved, CHAT_FILE
        if (saved is None or saved.template is None) and all(self._single_id(t) is not None for t in CHATML_TOKENS):
            self.chat_format = (saved or ChatFormat()).with_template("chatml")
            self.chat_template_source = "default: chatml"

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
            "chat_template": self.chat_template_source if self.can_chat else None,
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
        from lmlab.generation import SamplingConfig

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
        yield from self._stream_ids(ids, cfg, self.codec.end_ids or None)

    def _stream_ids(self, ids: list[int], cfg, eos_id: int | Sequence[int] | None):
        """:func:`lmlab.generation.stream_generate` after prompt ``ids`` (cropped to the context)."""
        from lmlab.generation import stream_generate

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
        yield from stream_generate(no_grad_step, ids, cfg, decode, eos_id=eos_id,
                                   extra_final=extra, device=device)

    def generate(self, prompt: str, **kwargs) -> dict:
        """``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}`` (completion only, stop trimmed)."""
        from lmlab.generation import collect_stream

        return collect_stream(self.stream(prompt, **kwargs))

    # --- chat ----------------------------------------------------------------------------------------------

    @property
    def can_chat(self) -> bool:
        """Whether this model has a chat template (its ``chat.json``, the ChatML default, or one given)."""
        return self.chat_format is not None and self.chat_format.template is not None

    def set_chat_template(self, spec: str) -> None:
        """Chat with the template of ``spec``: a built-in name (``chatml``, ``plain``) or a file (Jinja text, or a
        ``tokenizer_config.json`` / ``chat.json``); the run's special tokens and stop ids are kept."""
        self.chat_format = (self.chat_format or ChatFormat()).with_template(spec)
        self.chat_template_source = f"--template {spec}"

    def _single_id(self, text: str | None) -> int | None:
        """The id of ``text`` when the tokenizer has it as one token (a special token such as ``<|im_end|>``)."""
        if not text:
            return None
        to_id = getattr(self.codec.tokenizer, "token_to_id", None)
        if to_id is not None:
            found = to_id(text)
            if found is not None:
                return int(found)
        vocab = self.codec.vocab
        if vocab is not None:
            return vocab[text] if text in vocab else None
        ids = self.codec.encode(text)  # a tokenizer with its own ids and no token_to_id: what it makes of the text
        bos = self.codec.bos_id if self.codec.add_bos else None
        ids = ids[1:] if bos is not None and ids[:1] == [bos] else ids
        ids = ids[:-1] if self.codec.add_eos and len(ids) > 1 else ids
        return int(ids[0]) if len(ids) == 1 else None

    def chat_prompt(self, messages) -> list[int]:
        """Token ids of ``messages`` rendered by the chat template, ending with the assistant's turn header.

        Raises:
            ChatTemplateError: no template, or the template fails; DataError: a malformed message or role.
        """
        fmt = self.chat_format
        if fmt is None or fmt.template is None:
            raise ChatTemplateError(
                "this model has no chat template (no chat.json in its run directory and its tokenizer has no "
                "<|im_start|>/<|im_end|> tokens); give one: lmlab gpt chat RUN --template FILE|chatml|plain, "
                "lmlab serve --chat-template [MODEL=]FILE|chatml|plain"
            )
        text = fmt.render(messages, add_generation_prompt=True)
        ids = self.codec.encode_prompt(text) if text else []
        bos = self._single_id(fmt.bos_token) if fmt.bos_token else self.codec.bos_id
        if bos is not None and fmt.add_bos and ids[:1] != [bos]:
            ids.insert(0, bos)
        while bos is not None and ids[:2] == [bos, bos]:  # the template wrote it and the codec framed it: once
            ids.pop(0)
        return ids

    def chat_stops(self, stop: Sequence[str] | str | None = None) -> tuple[list[int], list[str]]:
        """(token ids that end a reply, stop strings): the run's ``stop_token_ids``, its EOS, the template's
        end-of-turn text (as an id when it is one token, else as a stop string) and the ``stop`` given."""
        fmt = self.chat_format or ChatFormat()
        ids = [int(i) for i in fmt.stop_token_ids]
        strings = [stop] if isinstance(stop, str) else list(stop or [])
        for text in (fmt.eos_token, *fmt.stop):
            single = self._single_id(text)
            if single is not None:
                ids.append(single)
            elif text and text not in strings:
                strings.append(text)
        if self.codec.eos_id is not None:
            ids.append(self.codec.eos_id)
        return list(dict.fromkeys(ids)), strings

    def stream_chat(
        self,
        messages,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
    ):
        """The assistant's next reply to ``messages``, as :meth:`stream` yields text: ``{"text": piece}`` events,
        then ``{"finish_reason", "prompt_tokens", "completion_tokens"}``. The reply ends at any stop token id
        (:meth:`chat_stops`), a stop string, or ``max_new_tokens``."""
        from lmlab.pipelines.base import sampling_config

        ids = self.chat_prompt(messages)
        stop_ids, stop_strings = self.chat_stops(stop)
        cfg = sampling_config(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                              repetition_penalty=repetition_penalty, stop=stop_strings, seed=seed)
        yield from self._stream_ids(ids, cfg, stop_ids or None)

    def chat(self, messages, **options) -> dict:
        """``{"message": {"role": "assistant", "content"}, "text", "finish_reason", "prompt_tokens",
        "completion_tokens"}``: the collected :meth:`stream_chat`."""
        from lmlab.generation import collect_stream

        result = collect_stream(self.stream_chat(messages, **options))
        return {"message": {"role": "assistant", "content": result["text"]}, **result}
