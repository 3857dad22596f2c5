"""What a pipeline can do, declared: one :class:`typing.Protocol` per capability, and the one place where
sampling options (CLI flags, HTTP request fields, keyword arguments) become a
:class:`lmlab.generation.SamplingConfig`.

A pipeline is whatever ``lmlab.load(run_dir)`` returns. It serves a capability by implementing that
capability's protocol — the methods, with the keyword options written in the protocol's signatures — so the
CLI, the tour and the server call it through the protocol and never inspect its signature:

========================  ==================================================  ==============================
protocol                  methods                                             pipelines
========================  ==================================================  ==============================
:class:`TextClassifier`   ``labels``, ``predict``, ``probabilities``, ``info``  ``Classifier``
:class:`TextGenerator`    ``stream``, ``generate``, ``info``                    ``Generator`` (RNN LM), GPT, SeqGAN
:class:`ChatGenerator`    ``stream_chat``, ``chat``, ``can_chat``, ``info``     GPT (a generator that can also chat)
:class:`Translator`       ``translate``, ``info``                               seq2seq ``Translator``
:class:`WordVectors`      ``most_similar``, ``analogy``, ``similarity``, ``info``  ``KeyedVectors``
:class:`MaskFiller`       ``fill_mask``, ``info``                               masked LM ``FillMask``
========================  ==================================================  ==============================

:class:`ChatGenerator` is not a capability of its own: a chat model is served as a generator and, where it
implements :class:`ChatGenerator` and ``can_chat`` is true, by ``/v1/chat/completions`` as well.

``isinstance(pipeline, TextGenerator)`` checks the methods are there (``runtime_checkable``); the options each
method accepts are part of the protocol, so a new pipeline of a capability must accept all of them.
:func:`capability_of` names the capability of a pipeline, in the order of :data:`CAPABILITIES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lmlab.errors import ConfigError

if TYPE_CHECKING:
    from lmlab.generation import SamplingConfig

#: a temperature below this is greedy decoding (dividing logits by, say, 1e-300 overflows to inf)
MIN_TEMPERATURE = 1e-3

#: the keyword options every :meth:`TextGenerator.stream` / ``generate`` accepts (SamplingConfig's fields,
#: less ``greedy``, which is ``temperature=0``)
GENERATION_OPTIONS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", "seed")

#: the keyword options every :meth:`Translator.translate` accepts
TRANSLATE_OPTIONS = ("beam_size", "max_len", "n_best", "length_penalty", "on_long", "batch_size")

#: the ``method`` names :meth:`WordVectors.analogy` accepts (3CosAdd, 3CosMul; "3cosadd"/"3cosmul" too)
ANALOGY_METHODS = ("add", "mul")


@runtime_checkable
class TextClassifier(Protocol):
    """Texts in, labels with probabilities out."""

    labels: list[str]

    def predict(self, texts: list[str]) -> list[dict]:
        """For each text ``{"label", "probability", "probabilities": {label: p}}``."""
        ...

    def probabilities(self, texts: list[str]) -> Any:
        """(N, C) class probabilities, in ``labels`` order."""
        ...

    def info(self) -> dict: ...


@runtime_checkable
class TextGenerator(Protocol):
    """A prompt in, its continuation out, streamed piece by piece.

    Both methods take the prompt and the keyword options of :data:`GENERATION_OPTIONS` (build them with
    :func:`sampling_config` / :func:`generation_options`)."""

    def stream(self, prompt: str, *, max_new_tokens: int = ..., temperature: float = ..., top_k: int = ...,
               top_p: float = ..., repetition_penalty: float = ..., stop: Sequence[str] = ...,
               seed: int | None = ...) -> Iterator[dict]:
        """Yield ``{"text": piece}`` as each piece is certain, then one final ``{"finish_reason": "length" |
        "stop" | "eos", "prompt_tokens", "completion_tokens", ...}``. Closing the iterator stops generating."""
        ...

    def generate(self, prompt: str, **options: Any) -> dict:
        """``{"text", "finish_reason", "prompt_tokens", "completion_tokens"}``: the collected stream."""
        ...

    def info(self) -> dict: ...


@runtime_checkable
class ChatGenerator(Protocol):
    """A conversation in, the assistant's next reply out, streamed: the messages are rendered by the model's
    chat template (:mod:`lmlab.chat`) and continued until a stop token, a stop string or ``max_new_tokens``.

    Both methods take ``messages`` (a list of ``{"role", "content"}``, roles in :data:`lmlab.chat.ROLES`) and the
    keyword options of :data:`GENERATION_OPTIONS`; a model without a template, a template that fails and a bad
    message are :class:`lmlab.errors.LmlabError` s (ChatTemplateError, DataError)."""

    #: whether the model has a chat template to chat with
    can_chat: bool

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], *, max_new_tokens: int = ..., temperature: float = ...,
                    top_k: int = ..., top_p: float = ..., repetition_penalty: float = ..., stop: Sequence[str] = ...,
                    seed: int | None = ...) -> Iterator[dict]:
        """Yield ``{"text": piece}`` of the reply as each piece is certain, then one final ``{"finish_reason",
        "prompt_tokens", "completion_tokens", ...}`` (as :meth:`TextGenerator.stream`)."""
        ...

    def chat(self, messages: Sequence[Mapping[str, Any]], **options: Any) -> dict:
        """``{"message": {"role": "assistant", "content"}, "text", "finish_reason", "prompt_tokens",
        "completion_tokens"}``."""
        ...

    def info(self) -> dict: ...


@runtime_checkable
class Translator(Protocol):
    """Source sentences in, translations (n-best lists with scores) out.

    ``on_long="error"`` makes a source sentence longer than the model's limit a :class:`lmlab.errors.DataError`
    instead of a truncation (the server asks for that)."""

    def translate(self, texts: Sequence[str], beam_size: int = ..., max_len: int | None = ..., n_best: int = ...,
                  length_penalty: float | None = ..., on_long: str | None = ...,
                  batch_size: int | None = ...) -> list[dict]:
        """``[{"translation", "score", "n_best": [{"translation", "score"}, ...]}]``, one per text."""
        ...

    def info(self) -> dict: ...


@runtime_checkable
class WordVectors(Protocol):
    """Word vectors: nearest neighbours, analogies, similarities."""

    def most_similar(self, positive: str | Sequence[str] = ..., negative: str | Sequence[str] = ...,
                     topn: int = ...) -> list[tuple[str, float]]: ...

    def analogy(self, a: str, b: str, c: str, topn: int = ..., method: str = ...) -> list[tuple[str, float]]:
        """``a`` is to ``b`` as ``c`` is to ...; ``method`` one of :data:`ANALOGY_METHODS`."""
        ...

    def similarity(self, word1: str, word2: str) -> float: ...

    def info(self) -> dict: ...


@runtime_checkable
class MaskFiller(Protocol):
    """Texts with ``[MASK]`` in, the most likely tokens for each mask (with probabilities) out.

    A text without ``[MASK]``, with more than the pipeline's ``max_masks``, or too long for the model is a
    :class:`lmlab.errors.DataError`."""

    def fill_mask(self, texts: list[str], top_k: int = ...) -> list[dict]:
        """``[{"text", "filled", "masks": [[{"token", "id", "probability"}, ...top_k], ...per mask]}]``."""
        ...

    def info(self) -> dict: ...


#: capability name -> protocol, in the order :func:`capability_of` tries them
CAPABILITIES: dict[str, type] = {
    "generator": TextGenerator,
    "classifier": TextClassifier,
    "translator": Translator,
    "vectors": WordVectors,
    "fill_mask": MaskFiller,
}


def capability_of(pipeline: Any) -> str:
    """The capability (a key of :data:`CAPABILITIES`) whose protocol ``pipeline`` implements."""
    for name, protocol in CAPABILITIES.items():
        if isinstance(pipeline, protocol):
            return name
    raise ConfigError(
        f"cannot serve a {type(pipeline).__name__}: it implements none of the pipeline protocols "
        f"({', '.join(p.__name__ for p in CAPABILITIES.values())} in lmlab.pipelines.base)"
    )


def sampling_config(options: Mapping[str, Any] | SamplingConfig | None = None, /, **more: Any) -> SamplingConfig:
    """THE way generation options become a validated :class:`~lmlab.generation.SamplingConfig`.

    ``options`` (a mapping, or a SamplingConfig to start from) and ``more`` are SamplingConfig fields; a value
    of None means "the default" (a CLI flag or request field left out), except ``seed``. ``stop`` may be one
    string or a list. A temperature below :data:`MIN_TEMPERATURE` is greedy (0). Unknown names are a
    ConfigError naming the known ones. Used by the CLI commands, the server and the pipelines alike.
    """
    from lmlab.generation import SamplingConfig

    if isinstance(options, SamplingConfig):
        base, given = options, {}
    else:
        base, given = SamplingConfig(), dict(options or {})
    given.update(more)
    known = {f.name for f in dataclasses.fields(SamplingConfig)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(f"unknown sampling option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: v for k, v in given.items() if v is not None or k == "seed"}
    if "stop" in values:
        stop = values["stop"]
        values["stop"] = [stop] if isinstance(stop, str) else list(stop)
    temperature = values.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool) and 0 < temperature < MIN_TEMPERATURE:
        values["temperature"] = 0.0  # 1/T would overflow
    return dataclasses.replace(base, **values) if values else dataclasses.replace(base)


def generation_options(cfg: SamplingConfig) -> dict[str, Any]:
    """``cfg`` as the keyword options of :data:`GENERATION_OPTIONS`, which every :class:`TextGenerator`
    accepts (``greedy`` becomes ``temperature=0``)."""
    options = {name: getattr(cfg, name) for name in GENERATION_OPTIONS}
    options["stop"] = list(cfg.stop)
    if cfg.greedy:
        options["temperature"] = 0.0
    return options


__all__ = [
    "ANALOGY_METHODS",
    "CAPABILITIES",
    "ChatGenerator",
    "GENERATION_OPTIONS",
    "MIN_TEMPERATURE",
    "MaskFiller",
    "TRANSLATE_OPTIONS",
    "TextClassifier",
    "TextGenerator",
    "Translator",
    "WordVectors",
    "capability_of",
    "generation_options",
    "sampling_config",
]
