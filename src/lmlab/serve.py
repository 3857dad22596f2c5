"""HTTP serving: an OpenAI-style API and a browser playground over trained run directories.

``create_app(run_dirs, limits=ServeLimits())`` loads each run directory with :func:`lmlab.load` and returns a
FastAPI app; nothing is loaded at import time and only the run directories named here are ever served. A
model's name is its run directory's base name.

Endpoints (JSON in, JSON out; the schema, with every limit, is at ``/openapi.json``):

* ``GET /health``, ``GET /v1/models``, ``GET /v1/models/{name}``
* ``POST /v1/completions`` (generators: RNN LM, GPT): an OpenAI-compatible subset, ``stream: true`` sends
  server-sent events ending ``data: [DONE]``
* ``POST /v1/chat/completions`` (GPT runs with a chat template, :mod:`lmlab.chat`): OpenAI-compatible, streaming too
* ``POST /v1/classify`` (classifiers), ``POST /v1/translate`` (seq2seq), ``POST /v1/embeddings/similar`` and
  ``POST /v1/embeddings/analogy`` (word vectors), ``POST /v1/fill-mask`` (masked LMs)
* ``GET /`` the playground page (``lmlab/serve_static``)

How it stays responsive: inference runs in worker threads, never on the event loop. Generations and other
inference each have a fixed number of slots (:class:`ServeLimits`); a request that finds them all busy *queues*
for up to ``queue_timeout_s`` and then gets 429 with ``Retry-After``. A generation checks between tokens
whether its client is still connected and whether it has run past ``request_timeout_s``, and stops if not.
Every error is JSON ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status, except real bugs (500).
"""

import asyncio
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmlab.chat import ROLES, template_from_spec
from lmlab.errors import CheckpointError, ConfigError, LmlabError
from lmlab.pipelines.base import (
    ANALOGY_METHODS,
    MIN_TEMPERATURE,
    ChatGenerator,
    capability_of,
    generation_options,
    sampling_config,
)

log = logging.getLogger("lmlab.serve")

#: model kinds (the capabilities of :mod:`lmlab.pipelines.base`) and the endpoints serving each
KIND_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "generator": ("/v1/completions",),
    "classifier": ("/v1/classify",),
    "translator": ("/v1/translate",),
    "vectors": ("/v1/embeddings/similar", "/v1/embeddings/analogy"),
    "fill_mask": ("/v1/fill-mask",),
}


#: how often a generation checks that its client is still connected (seconds)
DISCONNECT_CHECK_S = 0.2


@dataclass(frozen=True)
class ServeLimits:
    """What one request (and the server as a whole) may ask for. Every field is a CLI flag of ``lmlab serve``.

    ``max_body_bytes``: larger request bodies get 413. ``max_input_chars``: longest prompt / text / word (422).
    ``max_batch``: most texts in one classify or translate request. ``max_tokens``: cap on a completion's
    ``max_tokens`` and a translation's ``max_len``. ``max_beam_size`` / ``max_topn``: caps for translate and the
    embeddings endpoints. ``max_concurrent_generations`` / ``max_concurrent_inference``: worker slots for
    completions / for everything else; a request that finds none free waits up to ``queue_timeout_s`` for one
    and then gets 429. ``request_timeout_s``: a request still running after this long is stopped (504; a stream
    gets an error event, then ``[DONE]``). ``max_batch_texts``: classify and translate requests that queue for a
    slot at the same time are joined into one model call of up to this many texts (dynamic batching; 1 = off).
    ``max_messages`` / ``max_chat_chars``: most messages in one chat request, and most characters of all their
    contents together (422 beyond).
    """

    max_body_bytes: int = 1_048_576
    max_input_chars: int = 4000
    max_batch: int = 32
    max_tokens: int = 512
    max_beam_size: int = 16
    max_topn: int = 100
    max_concurrent_generations: int = 4
    max_concurrent_inference: int = 4
    queue_timeout_s: float = 30.0
    request_timeout_s: float = 120.0
    max_batch_texts: int = 64
    max_messages: int = 64
    max_chat_chars: int = 32_000

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            if not ok:
                problems.append(f"{f.name} must be a positive {'integer' if f.type in ('int', int) else 'number'}, got {value!r}")
        if problems:
            raise ConfigError("bad serving limits: " + "; ".join(problems))


# --- models being served -----------------------------------------------------------------------------------


@dataclass
class ServedModel:
    name: str
    run_dir: Path
    kind: str
    model_type: str
    pipeline: Any
    info: dict
    created: int
    #: whether ``/v1/chat/completions`` serves it (a ChatGenerator with a chat template)
    chat: bool = False

    def card(self) -> dict:
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "lmlab",
            "kind": self.kind,
            "model_type": self.model_type,
            "endpoints": [*KIND_ENDPOINTS[self.kind], *(["/v1/chat/completions"] if self.chat else [])],
            "info": self.info,
        }


def kind_of(pipeline: Any) -> str:
    """Which endpoints a pipeline can serve: the capability protocol (:mod:`lmlab.pipelines.base`) it implements."""
    return capability_of(pipeline)


def _weights_of(pipeline: Any) -> Iterable[tuple[str, Any]]:
    """(name, array) of every weight a pipeline computes with: its ``model``'s state dict (parameters and
    buffers) or, for word vectors, the ``vectors`` matrix."""
    model = getattr(pipeline, "model", None)
    if callable(getattr(model, "state_dict", None)):
        yield from model.state_dict().items()
    vectors = getattr(pipeline, "vectors", None)
    if vectors is not None and hasattr(vectors, "dtype"):
        yield "vectors", vectors


def check_finite_weights(pipeline: Any, run_dir: Path) -> None:
    """Refuse to serve a run whose floating-point weights hold NaN or infinity (a diverged training): every
    answer it gave would be garbage (NaN probabilities, a generator stuck on one token) with no sign why."""
    import numpy as np
    import torch

    bad: list[tuple[str, int, int]] = []
    for name, value in _weights_of(pipeline):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                count = int((~torch.isfinite(value)).sum())
                if count:
                    bad.append((name, count, value.numel()))
        elif isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.inexact):
            count = int((~np.isfinite(value)).sum())
            if count:
                bad.append((name, count, value.size))
    if bad:
        name, count, total = bad[0]
        more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{run_dir}: {count:,} of {total:,} values of weight {name!r}{more} are NaN or infinite, so the model "
            "cannot give meaningful answers; its training diverged: retrain it (lower train.lr, set train.grad_clip) "
            "or serve a run saved before it diverged"
        )


def _json_friendly(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str, allow_nan=False)) if obj is not None else {}


def load_models(run_dirs: Iterable[str | Path], device: str = "cpu",
                chat_templates: Mapping[str, str] | None = None) -> dict[str, ServedModel]:
    """Load every run directory; names are the base names and must be unique. ``chat_templates`` maps a model
    name to a chat template (a built-in name or a file, see :func:`lmlab.chat.template_from_spec`) that replaces
    its own; the key ``""`` gives one to every chat-capable model that has none."""
    from lmlab import checkpoint, load

    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise ConfigError("nothing to serve: name at least one run directory")
    by_name: dict[str, list[Path]] = {}
    for path in paths:
        by_name.setdefault(path.resolve().name, []).append(path)
    clashes = {name: ps for name, ps in by_name.items() if len(ps) > 1}
    if clashes:
        name, ps = next(iter(clashes.items()))
        raise ConfigError(
            f"two run directories would both be served as {name!r} ({', '.join(map(str, ps))}); model names are "
            "run-directory base names, so rename or copy one of them"
        )
    templates = dict(chat_templates or {})
    unknown = sorted(set(templates) - {""} - set(by_name))
    if unknown:
        raise ConfigError(f"--chat-template names {', '.join(unknown)}, which is not served; served: "
                          f"{', '.join(sorted(by_name))}")
    for spec in templates.values():  # every template is read and parsed before any model is loaded, even one
        template_from_spec(spec)  # that no model ends up using (each has its own): a typo is named, not ignored
    models: dict[str, ServedModel] = {}
    for path in paths:
        pipeline = load(path, device=device)
        kind = kind_of(pipeline)
        chat = _apply_chat_template(pipeline, path.resolve().name, templates)
        check_finite_weights(pipeline, path)
        raw_info = pipeline.info() if callable(getattr(pipeline, "info", None)) else {}
        try:
            info = _json_friendly(raw_info)
        except ValueError:  # non-finite numbers in info(): keep it serialisable
            info = json.loads(json.dumps(raw_info, default=str).replace("NaN", "null"))
        name = path.resolve().name
        models[name] = ServedModel(
            name=name,
            run_dir=path,
            kind=kind,
            model_type=str(getattr(pipeline, "model_type", None) or info.get("model_type")
                           or checkpoint.load_config(path)["model_type"]),
            pipeline=pipeline,
            info=info,
            created=int((path / "config.json").stat().st_mtime) if (path / "config.json").exists() else 0,
            chat=chat,
        )
    return models


def _apply_chat_template(pipeline: Any, name: str, templates: Mapping[str, str]) -> bool:
    """Give ``pipeline`` the template ``templates`` names for it (or the one for every model, when it has none);
    return whether it can chat."""
    can = isinstance(pipeline, ChatGenerator)
    if name in templates:
        if not can:
            raise ConfigError(f"--chat-template {name}=...: model {name!r} ({type(pipeline).__name__}) cannot chat; "
                              "chat templates apply to GPT runs")
        pipeline.set_chat_template(templates[name])
    elif can and templates.get("") and not pipeline.can_chat:
        pipeline.set_chat_template(templates[""])
    return bool(can and pipeline.can_chat)


# --- errors ------------------------------------------------------------------------------------------------


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with ``status``."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.headers = status, message, type_, param, headers


def _error_payload(status: int, message: str, type_: str, param: str | None = None, detail: Any = None) -> dict:
    body: dict[str, Any] = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    if detail is not None:
        body["detail"] = detail
    return body


def _error_response(status: int, message: str, type_: str, param: str | None = None, detail: Any = None,
                    headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_error_payload(status, message, type_, param, detail), status_code=status, headers=headers)


_STATUS_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                 413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error", 504: "timeout"}


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _json_safe(obj: Any) -> Any:
    """What a client sent, made fit to echo back as JSON: lone surrogates escaped, non-finite numbers as text."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, float):
        return _finite_or_str(obj)
    if isinstance(obj, dict):
        return {_json_safe(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _describe_validation_errors(errors: Sequence[dict]) -> tuple[str, str | None]:
    parts, param = [], None
    for err in errors[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        msg = err.get("msg", "invalid")
        if err.get("type") == "string_pattern_mismatch":
            msg = "must not be blank (it is empty or only whitespace)"
        elif err.get("type") == "model_attributes_type" and not loc:
            msg = "expected a JSON object, sent with Content-Type: application/json"
        elif err.get("type") == "missing" and not loc:
            msg = "the request body is empty; send a JSON object with Content-Type: application/json"
        parts.append(f"{where}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, param


class BodySizeLimit:
    """ASGI middleware answering 413 to a request body larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Callable, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _send_json(send, 400, _error_payload(400, "Content-Length is not a number", "invalid_request_error"))
                return
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large(size))
                return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await _send_json(send, 413, self._too_large(None))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> dict:
        got = f" ({size} bytes)" if size is not None else ""
        return _error_payload(
            413, f"request body too large{got}: the limit is {self.max_bytes} bytes (lmlab serve --max-body-bytes)",
            "request_too_large")


async def _send_json(send: Callable, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- request / response schemas (built per app, so the schema states this server's limits) -------------------


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
    detail: list[dict[str, Any]] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: Literal["generator", "classifier", "translator", "vectors", "fill_mask"]
    model_type: str
    endpoints: list[str]
    info: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]
    pid: int
    models: list[str]
    uptime_s: float
    generations: dict[str, int]
    batching: dict[str, int]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(BaseModel):
    """One server-sent event of a streamed completion (the last one carries ``finish_reason`` and ``usage``)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


def _inline_refs(schema: Any, defs: dict) -> Any:
    """``schema`` with every ``{"$ref": "#/$defs/X"}`` replaced by ``defs[X]`` (the models are not recursive)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline_refs(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline_refs(v, defs) for v in schema]
    return schema


def _sse_event_schema(chunk_model: type[BaseModel] | None = None) -> dict:
    if chunk_model is None:
        chunk = CompletionChunk.model_json_schema(ref_template="#/components/schemas/{model}")
        chunk.pop("$defs", None)  # CompletionChoice and Usage are components already (via Completion)
    else:  # its parts are not all components: inline them
        chunk = chunk_model.model_json_schema()
        chunk = _inline_refs(chunk, chunk.pop("$defs", {}))
    payload = {"anyOf": [chunk, {"$ref": "#/components/schemas/ErrorResponse"}]}
    return {  # one server-sent event: its `data` is a JSON chunk (or error), the last one the literal [DONE]
        "type": "object",
        "required": ["data"],
        "properties": {"data": {"anyOf": [
            {"type": "string", "contentMediaType": "application/json", "contentSchema": payload},
            {"type": "string", "const": "[DONE]"},
        ]}},
    }


class ChatReply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatReply
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion: the first has ``delta.role``, the last
    ``finish_reason`` and ``usage``; a usage-only one (no choices) follows with ``stream_options.include_usage``."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ClassifyResult(BaseModel):
    label: str
    probability: float
    probabilities: dict[str, float]


class ClassifyResponse(BaseModel):
    object: Literal["classification"] = "classification"
    model: str
    labels: list[str]
    results: list[ClassifyResult]


class Hypothesis(BaseModel):
    translation: str
    score: float | None


class TranslationResult(BaseModel):
    translation: str
    score: float | None
    n_best: list[Hypothesis]


class TranslateResponse(BaseModel):
    object: Literal["translation"] = "translation"
    model: str
    results: list[TranslationResult]


class WordScore(BaseModel):
    word: str
    score: float | None


class SimilarResponse(BaseModel):
    object: Literal["similar_words"] = "similar_words"
    model: str
    results: list[WordScore]


class MaskCandidate(BaseModel):
    token: str
    id: int
    probability: float


class FillMaskResult(BaseModel):
    text: str
    filled: str
    masks: list[list[MaskCandidate]]


class FillMaskResponse(BaseModel):
    object: Literal["fill_mask"] = "fill_mask"
    model: str
    results: list[FillMaskResult]


class AnalogyResponse(BaseModel):
    object: Literal["analogy"] = "analogy"
    model: str
    query: dict[str, str]
    results: list[WordScore]


@dataclass
class _Requests:
    Completion: type[BaseModel]
    Chat: type[BaseModel]
    Classify: type[BaseModel]
    Translate: type[BaseModel]
    Similar: type[BaseModel]
    Analogy: type[BaseModel]
    FillMask: type[BaseModel]


def build_request_models(limits: ServeLimits, models: dict[str, ServedModel]) -> _Requests:
    """The request bodies, with this server's limits in their constraints (and so in ``/openapi.json``)."""
    L = limits

    def names(kind: str) -> list[str]:
        return [m.name for m in models.values() if m.kind == kind]

    def first(kind: str) -> str:
        return (names(kind) or ["my-run"])[0]

    def model_field(kind: str) -> Any:
        served = names(kind)
        return Field(
            min_length=1, max_length=512,
            description="name of a served model of this kind (GET /v1/models lists them); served here: "
            + (", ".join(served) if served else "none"),
            examples=[first(kind)],
        )

    StopStr = Annotated[str, Field(min_length=1, max_length=200)]
    StopList = Annotated[list[StopStr], Field(min_length=1, max_length=4)]
    Text = Annotated[str, Field(min_length=1, max_length=L.max_input_chars, pattern=r"\S")]
    Word = Annotated[str, Field(min_length=1, max_length=min(L.max_input_chars, 200), pattern=r"\S")]

    class CompletionRequest(BaseModel):
        """An OpenAI-compatible subset of ``POST /v1/completions`` (plus ``top_k`` and ``repetition_penalty``)."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("generator"), "prompt": "ROMEO:", "max_tokens": 32, "temperature": 0.8}]})
        model: str = model_field("generator")
        prompt: str = Field(min_length=1, max_length=L.max_input_chars, description="the text to continue")
        max_tokens: int = Field(16, ge=1, le=L.max_tokens, description="most tokens to generate")
        temperature: float = Field(1.0, ge=0.0, le=2.0,
                                   description=f"0 = greedy (arg-max); below {MIN_TEMPERATURE:g} counts as 0")
        top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling; 1 switches it off")
        top_k: int = Field(0, ge=0, le=1_000_000, description="keep the k most likely tokens; 0 switches it off")
        repetition_penalty: float = Field(1.0, ge=0.01, le=100.0, description="> 1 discourages repeats; 1 = off")
        stop: StopStr | StopList | None = Field(
            None, description="a string or up to 4 strings that end the completion (not included in it)")
        seed: int | None = Field(None, ge=0, le=2**63 - 1, description="makes sampling reproducible")
        stream: bool = Field(False, description="send server-sent events, ending with `data: [DONE]`")
        n: int = Field(1, ge=1, le=1, description="number of completions (only 1 is supported)")
        user: str | None = Field(None, max_length=256, description="ignored (accepted for OpenAI compatibility)")

    class TextPart(BaseModel):
        model_config = ConfigDict(extra="forbid")
        type: Literal["text"]
        text: str = Field(max_length=L.max_chat_chars)

    class ChatMessage(BaseModel):
        """One message of the conversation (``content`` as a string, or a list of text parts)."""

        model_config = ConfigDict(extra="forbid")
        role: Literal[ROLES] = Field(description="who said it: " + ", ".join(ROLES))  # type: ignore[valid-type]
        content: Annotated[str, Field(max_length=L.max_chat_chars)] | Annotated[
            list[TextPart], Field(max_length=64)]
        name: str | None = Field(None, max_length=256, description="passed to the template as message.name")
        tool_call_id: str | None = Field(None, max_length=256, description="passed to the template")

    class StreamOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        include_usage: bool = Field(False, description="send a last chunk with no choices and the usage")

    class ChatRequest(BaseModel):
        """An OpenAI-compatible subset of ``POST /v1/chat/completions`` (plus ``top_k`` and ``repetition_penalty``)."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("generator"), "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 32}]})
        model: str = model_field("generator")
        messages: list[ChatMessage] = Field(
            min_length=1, max_length=L.max_messages,
            description=f"the conversation so far (at most {L.max_messages} messages and {L.max_chat_chars} "
            "characters of content in all)")
        max_tokens: int | None = Field(None, ge=1, le=L.max_tokens,
                                       description=f"most tokens of the reply (default {L.max_tokens})")
        max_completion_tokens: int | None = Field(None, ge=1, le=L.max_tokens,
                                                  description="OpenAI's newer name for max_tokens (wins if both)")
        temperature: float = Field(1.0, ge=0.0, le=2.0,
                                   description=f"0 = greedy (arg-max); below {MIN_TEMPERATURE:g} counts as 0")
        top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling; 1 switches it off")
        top_k: int = Field(0, ge=0, le=1_000_000, description="keep the k most likely tokens; 0 switches it off")
        repetition_penalty: float = Field(1.0, ge=0.01, le=100.0, description="> 1 discourages repeats; 1 = off")
        stop: StopStr | StopList | None = Field(
            None, description="a string or up to 4 strings that end the reply (not included in it)")
        seed: int | None = Field(None, ge=0, le=2**63 - 1, description="makes sampling reproducible")
        stream: bool = Field(False, description="send server-sent events, ending with `data: [DONE]`")
        stream_options: StreamOptions | None = None
        n: int = Field(1, ge=1, description="number of replies: only 1 is supported (400 otherwise)")
        user: str | None = Field(None, max_length=256, description="ignored (accepted for OpenAI compatibility)")

        @model_validator(mode="after")
        def _total_size(self) -> "ChatRequest":
            total = sum(len(m.content) if isinstance(m.content, str) else sum(len(p.text) for p in m.content)
                        for m in self.messages)
            if total > L.max_chat_chars:
                raise ValueError(f"the messages hold {total} characters of content in all; the limit is "
                                 f"{L.max_chat_chars} (lmlab serve --max-chat-chars)")
            return self

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("classifier"), "texts": ["a gripping, beautifully acted film"]}]})
        model: str = model_field("classifier")
        texts: list[Text] = Field(min_length=1, max_length=L.max_batch, description="the texts to classify")

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("translator"), "texts": ["i am cold ."], "beam_size": 5}]})
        model: str = model_field("translator")
        texts: list[Text] = Field(min_length=1, max_length=L.max_batch, description="source sentences")
        beam_size: int = Field(min(5, L.max_beam_size), ge=1, le=L.max_beam_size, description="1 = greedy decoding")
        max_len: int | None = Field(None, ge=1, le=L.max_tokens,
                                    description="most target tokens (default: the model's own limit)")
        n_best: int = Field(1, ge=1, le=L.max_beam_size, description="hypotheses to return per text (<= beam_size)")

        @model_validator(mode="after")
        def _n_best_fits(self) -> "TranslateRequest":
            if self.n_best > self.beam_size:
                raise ValueError(f"n_best ({self.n_best}) cannot exceed beam_size ({self.beam_size})")
            return self

    class SimilarRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("vectors"), "positive": ["king"], "topn": 10}]})
        model: str = model_field("vectors")
        positive: list[Word] = Field(min_length=1, max_length=L.max_batch, description="words to be similar to")
        negative: list[Word] = Field(default_factory=list, max_length=L.max_batch,
                                     description="words to move away from")
        topn: int = Field(10, ge=1, le=L.max_topn)

    class AnalogyRequest(BaseModel):
        """``a`` is to ``b`` as ``c`` is to ...?"""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("vectors"), "a": "man", "b": "king", "c": "woman", "topn": 5}]})
        model: str = model_field("vectors")
        a: Word
        b: Word
        c: Word
        topn: int = Field(1, ge=1, le=L.max_topn)
        method: Literal["3cosadd", "3cosmul"] = "3cosadd"

    class FillMaskRequest(BaseModel):
        """Texts holding ``[MASK]``: the ``top_k`` most likely tokens for each mask."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"model": first("fill_mask"), "texts": ["the movie was [MASK] ."], "top_k": 5}]})
        model: str = model_field("fill_mask")
        texts: list[Text] = Field(min_length=1, max_length=L.max_batch,
                                  description="texts with one or more [MASK] (too many or too long: 422)")
        top_k: int = Field(5, ge=1, le=L.max_topn, description="candidates per [MASK]")

    return _Requests(CompletionRequest, ChatRequest, ClassifyRequest, TranslateRequest, SimilarRequest,
                     AnalogyRequest, FillMaskRequest)


# --- the worker side: slots, threads, generations ----------------------------------------------------------


def _run_no_grad(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    import torch

    with torch.no_grad():  # grad mode is per thread: a fresh worker thread starts with it on
        return fn(*args, **kwargs)


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class _Generation:
    """One completion being produced by a worker thread and consumed by the event loop."""

    def __init__(self, runtime: "_Runtime", request: Request, deadline: float) -> None:
        self.runtime, self.request, self.deadline = runtime, request, deadline
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.stop_reason = "cancelled"  # or "timed_out", set before ``cancel``
        self.pieces = 0
        self.checked_at = time.monotonic()

    def stop(self, reason: str = "cancelled") -> None:
        if not self.cancel.is_set():
            self.stop_reason = reason
            self.cancel.set()

    def worker(self, loop: asyncio.AbstractEventLoop, pipeline: Any, params: dict, method: str = "stream") -> str:
        """Runs in a worker thread: iterate ``pipeline.<method>(**params)`` (``stream``, or ``stream_chat``) and hand
        each event to the loop."""

        def emit(kind: str, payload: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))
            except RuntimeError:  # the event loop is gone (server shutting down)
                self.cancel.set()

        stream = None
        try:
            import torch

            with torch.no_grad():
                stream = getattr(pipeline, method)(**params)
                for event in stream:
                    if isinstance(event, str):  # a bare piece of text
                        event = {"text": event}
                    emit("event", event)
                    if "finish_reason" in event:
                        return "completed"
                    if time.monotonic() > self.deadline:
                        emit("timeout")
                        return "timed_out"
                    if self.cancel.is_set():
                        emit("cancelled")
                        return self.stop_reason
            emit("end")
            return "completed"
        except LmlabError as err:
            emit("user_error", str(err))
            return "rejected"
        except Exception as err:  # a bug: log it, tell the client, keep serving
            log.exception("generation failed")
            emit("error", f"{type(err).__name__}: {err}")
            return "failed"
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    async def next(self) -> tuple[str, Any]:
        """The next worker event; ("timeout" | "disconnected", None) when the deadline passes or the client left."""
        while True:
            now = time.monotonic()
            remaining = self.deadline - now
            if remaining <= 0:
                self.stop("timed_out")
                return "timeout", None
            if now - self.checked_at >= DISCONNECT_CHECK_S:  # also while tokens keep coming
                self.checked_at = now
                if self.cancel.is_set() or await self.request.is_disconnected():
                    self.stop("cancelled")
                    return "disconnected", None
            try:
                return await asyncio.wait_for(self.queue.get(), min(DISCONNECT_CHECK_S, remaining))
            except TimeoutError:
                continue


class _Batch:
    """Texts of several requests that will go to the model in one call; ``waiters`` are (start, end, future)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.waiters: list[tuple[int, int, asyncio.Future]] = []
        self.task: asyncio.Task | None = None


def _run_batch(fn: Callable, batch: _Batch, kwargs: dict) -> list:
    """In a worker thread: one call for the whole batch; if the input of one request makes it fail, each request
    again on its own, so that a bad text fails only the request that sent it."""
    try:
        results = list(_run_no_grad(fn, list(batch.texts), **kwargs))
    except LmlabError:
        if len(batch.waiters) == 1:
            raise
        out: list = []
        for start, end, _ in batch.waiters:
            try:
                out.append(list(_run_no_grad(fn, batch.texts[start:end], **kwargs)))
            except LmlabError as err:
                out.append(err)
        return out
    if len(results) != len(batch.texts):
        raise RuntimeError(f"{fn.__qualname__} returned {len(results)} results for {len(batch.texts)} texts")
    return [results[start:end] for start, end, _ in batch.waiters]


class _Runtime:
    """Worker threads, the slot semaphores and counters of one app."""

    def __init__(self, limits: ServeLimits) -> None:
        self.limits = limits
        self.generate_pool = ThreadPoolExecutor(limits.max_concurrent_generations, thread_name_prefix="lmlab-generate")
        self.infer_pool = ThreadPoolExecutor(limits.max_concurrent_inference, thread_name_prefix="lmlab-infer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[str, asyncio.Semaphore] = {}
        self.live: set[_Generation] = set()
        self.batches: dict[tuple, _Batch] = {}
        self._lock = threading.Lock()
        self.started_at = time.monotonic()
        self.stats = dict.fromkeys(
            ("active", "started", "completed", "cancelled", "timed_out", "rejected", "failed", "busy", "tokens"), 0)
        self.batch_stats = {"calls": 0, "requests": 0, "texts": 0, "largest": 0}

    def _slot(self, which: str) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # semaphores belong to one event loop (a TestClient may use several)
            self._loop = loop
            self._slots = {"generate": asyncio.Semaphore(self.limits.max_concurrent_generations),
                           "infer": asyncio.Semaphore(self.limits.max_concurrent_inference)}
        return self._slots[which]

    async def acquire(self, which: str) -> asyncio.Semaphore:
        slot = self._slot(which)
        try:
            await asyncio.wait_for(slot.acquire(), self.limits.queue_timeout_s)
        except TimeoutError:
            self.count(busy=1)
            n = self.limits.max_concurrent_generations if which == "generate" else self.limits.max_concurrent_inference
            flag = "--max-concurrent-generations" if which == "generate" else "--max-concurrent-inference"
            raise APIError(
                429, f"server busy: all {n} {which} slots stayed taken for {self.limits.queue_timeout_s:g} s; "
                f"retry later (or start the server with a larger {flag})", "rate_limit_error",
                headers={"Retry-After": "1"}) from None
        return slot

    async def infer(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` in an inference thread, holding a slot until the thread is done; 504 past the timeout."""
        slot = await self.acquire("infer")
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.infer_pool, lambda: _run_no_grad(fn, *args, **kwargs))

        def done(f: asyncio.Future) -> None:
            slot.release()
            if not f.cancelled():
                f.exception()  # retrieved, so an abandoned failure is not reported twice

        future.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.limits.request_timeout_s)
        except TimeoutError:
            raise APIError(504, f"the request took longer than {self.limits.request_timeout_s:g} s "
                           "(lmlab serve --request-timeout)", "timeout") from None
        except LmlabError as err:
            raise APIError(422, str(err)) from None

    async def infer_batched(self, key: tuple, fn: Callable, texts: list[str], **kwargs: Any) -> list:
        """``fn(texts, **kwargs)`` -> one result per text, with dynamic batching: requests with the same ``key``
        that arrive while a batch waits for an inference slot join it, and the batch runs as one call. An idle
        server runs each request at once (a batch of one), so batching adds no latency."""
        loop = asyncio.get_running_loop()
        key = (id(loop), *key)
        batch = self.batches.get(key)
        if batch is None or len(batch.texts) + len(texts) > self.limits.max_batch_texts:
            batch = _Batch()
            self.batches[key] = batch
            batch.task = loop.create_task(self._lead(key, batch, fn, kwargs))
        future: asyncio.Future = loop.create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "exception not retrieved"
        start = len(batch.texts)
        batch.texts.extend(texts)
        batch.waiters.append((start, len(batch.texts), future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.limits.request_timeout_s)
        except TimeoutError:
            raise APIError(504, f"the request took longer than {self.limits.request_timeout_s:g} s "
                           "(lmlab serve --request-timeout)", "timeout") from None

    async def _lead(self, key: tuple, batch: _Batch, fn: Callable, kwargs: dict) -> None:
        """Wait for a slot (requests keep joining meanwhile), close the batch, run it, hand out the results."""
        def settle(outcome: Exception | list) -> None:
            for i, (_, _, future) in enumerate(batch.waiters):
                if future.done():
                    continue
                item = outcome[i] if isinstance(outcome, list) else outcome
                if isinstance(item, LmlabError):
                    item = APIError(422, str(item))
                if isinstance(item, Exception):
                    future.set_exception(item)
                else:
                    future.set_result(item)

        try:
            slot = await self.acquire("infer")
        except BaseException as err:
            if self.batches.get(key) is batch:
                del self.batches[key]
            settle(err if isinstance(err, Exception) else APIError(503, "the server is shutting down", "server_error"))
            return
        if self.batches.get(key) is batch:
            del self.batches[key]  # closed: later requests start a new batch
        with self._lock:
            stats = self.batch_stats
            stats["calls"] += 1
            stats["requests"] += len(batch.waiters)
            stats["texts"] += len(batch.texts)
            stats["largest"] = max(stats["largest"], len(batch.texts))
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self.infer_pool, _run_batch, fn, batch, kwargs)
        except Exception as err:  # a bug in the pipeline: every request of the batch gets it (500)
            outcome = err
        finally:
            slot.release()
        settle(outcome)

    async def start_generation(self, pipeline: Any, params: dict, request: Request,
                               method: str = "stream") -> _Generation:
        slot = await self.acquire("generate")
        gen = _Generation(self, request, time.monotonic() + self.limits.request_timeout_s)
        loop = asyncio.get_running_loop()
        self.count(started=1, active=1)
        self.live.add(gen)

        def run() -> None:
            outcome = "failed"
            try:
                outcome = gen.worker(loop, pipeline, params, method)
            finally:  # counted here, in the worker, so it holds even when the event loop is already gone
                self.count(active=-1, **{outcome: 1})
                self.live.discard(gen)
                try:
                    loop.call_soon_threadsafe(slot.release)
                except RuntimeError:
                    pass

        loop.run_in_executor(self.generate_pool, run)
        return gen

    def batch_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.batch_stats)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stats)

    def count(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self.stats[key] = self.stats.get(key, 0) + delta

    def close(self) -> None:
        for gen in list(self.live):
            gen.stop("cancelled")
        self.generate_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=False, cancel_futures=True)


# --- the app -----------------------------------------------------------------------------------------------


#: environment variable through which ``lmlab serve --workers N`` tells each worker process what to serve
SPEC_ENV = "LMLAB_SERVE_SPEC"


def serve_spec(run_dirs: Iterable[str | Path], limits: ServeLimits, device: str, torch_threads: int = 0,
               chat_templates: Mapping[str, str] | None = None) -> str:
    """The JSON that :func:`create_app_from_env` reads (absolute paths, so workers may start anywhere)."""
    templates = {name: str(Path(spec).resolve()) if Path(spec).is_file() else spec
                 for name, spec in (chat_templates or {}).items()}
    return json.dumps({"run_dirs": [str(Path(p).resolve()) for p in run_dirs], "limits": asdict(limits),
                       "device": device, "torch_threads": torch_threads, "chat_templates": templates})


def create_app_from_env() -> FastAPI:
    """App factory for multi-process serving: uvicorn calls it once in each worker process
    (``lmlab serve --workers N``); what to serve comes from ``$LMLAB_SERVE_SPEC`` (see :func:`serve_spec`)."""
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise ConfigError(f"${SPEC_ENV} is not set: start worker processes with lmlab serve --workers N")
    spec = json.loads(raw)
    if spec.get("torch_threads"):
        import torch

        torch.set_num_threads(int(spec["torch_threads"]))
    return create_app(spec["run_dirs"], ServeLimits(**spec["limits"]), device=spec["device"],
                      chat_templates=spec.get("chat_templates"))


def _static_dir() -> Path:
    return Path(str(resources.files("lmlab").joinpath("serve_static")))


def _error_responses(*codes: int) -> dict:
    text = {400: "malformed JSON, or a model of the wrong kind for this endpoint", 404: "unknown model",
            413: "request body too large", 422: "invalid field values (the message says which and why)",
            429: "all worker slots stayed busy for the queue timeout", 504: "the request ran past the timeout"}
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


def create_app(run_dirs: Iterable[str | Path], limits: ServeLimits = ServeLimits(), device: str = "cpu",
               chat_templates: Mapping[str, str] | None = None) -> FastAPI:
    """Build the FastAPI app serving the pipelines of ``run_dirs`` (loaded now, once) within ``limits``;
    ``chat_templates`` (model name, or "" for every model without one -> template) as :func:`load_models`."""
    if not isinstance(limits, ServeLimits):
        raise ConfigError(f"limits must be a ServeLimits, got {type(limits).__name__}")
    models = load_models(run_dirs, device=device, chat_templates=chat_templates)
    runtime = _Runtime(limits)
    Req = build_request_models(limits, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        runtime.close()

    from lmlab import __version__

    app = FastAPI(
        title="lmlab",
        version=__version__,
        docs_url=None,  # /docs and /redoc come from the packaged assets below, never from a CDN
        redoc_url=None,
        description="Trained lmlab models behind an OpenAI-style HTTP API. Served: "
        + ", ".join(f"`{m.name}` ({m.kind})" for m in models.values())
        + ". Limits: " + ", ".join(f"{k}={v}" for k, v in asdict(limits).items()) + ".",
        lifespan=lifespan,
    )
    app.state.models = models
    app.state.limits = limits
    app.state.runtime = runtime
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc.status, exc.message, exc.type, exc.param, headers=exc.headers)

    @app.exception_handler(LmlabError)
    async def _lmlab_error(request: Request, exc: LmlabError) -> JSONResponse:
        return _error_response(422, str(exc), "invalid_request_error")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_json_safe(err) for err in jsonable_encoder(exc.errors(), custom_encoder={float: _finite_or_str})]
        for err in errors:  # keep the echo of oversized inputs out of the answer
            if isinstance(err.get("input"), str | list | dict) and len(json.dumps(err["input"])) > 200:
                err["input"] = "<omitted>"
        if any(err.get("type") == "json_invalid" for err in errors):
            where = next(err for err in errors if err.get("type") == "json_invalid")
            pos = where.get("loc", ["body", "?"])[-1]
            message = (f"malformed JSON at character {pos}: {(where.get('ctx') or {}).get('error', where.get('msg'))}; "
                       "send a JSON object with Content-Type: application/json")
            return _error_response(400, message, "invalid_request_error", None, errors)
        message, param = _describe_validation_errors(errors)
        return _error_response(422, message, "invalid_request_error", param, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "could not parse the body: send UTF-8 encoded JSON with Content-Type: application/json"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path} (see /docs or /openapi.json)"
        return _error_response(exc.status_code, message, _STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                               headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug by definition
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(500, f"internal error ({type(exc).__name__}); see the server log", "server_error")

    def get_model(name: str, kind: str, endpoint: str) -> ServedModel:
        served = models.get(name)
        right_kind = [m.name for m in models.values() if m.kind == kind]
        if served is None:
            raise APIError(404, f"model {name!r} is not served here; {endpoint} serves: "
                           f"{', '.join(right_kind) or 'no model (start the server with a ' + kind + ' run dir)'}",
                           "not_found_error", "model")
        if served.kind != kind:
            raise APIError(400, f"model {name!r} is a {served.kind} ({served.model_type}); {endpoint} needs a {kind}"
                           f" model: {', '.join(right_kind) or 'none is served here'}", "invalid_request_error", "model")
        return served

    # -- informational ------------------------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["server"])
    async def health() -> dict:
        """Liveness plus counters: generations active/started/completed/cancelled/timed out, tokens streamed;
        batched model calls (calls, requests and texts they carried, largest batch)."""
        return {"status": "ok", "pid": os.getpid(), "models": list(models), "uptime_s": round(time.monotonic() - runtime.started_at, 3),
                "generations": runtime.snapshot(), "batching": runtime.batch_snapshot()}

    @app.get("/v1/models", response_model=ModelList, tags=["server"])
    async def list_models() -> dict:
        """The served models, each with its kind, the endpoints that accept it and the pipeline's ``info()``."""
        return {"object": "list", "data": [m.card() for m in models.values()]}

    @app.get("/v1/models/{name}", response_model=ModelCard, responses=_error_responses(404), tags=["server"])
    async def get_model_card(name: str) -> dict:
        if name not in models:
            raise APIError(404, f"model {name!r} is not served here; served: {', '.join(models)}",
                           "not_found_error", "name")
        return models[name].card()

    # -- completions --------------------------------------------------------------------------------------

    def completion_chunk(cid: str, created: int, name: str, text: str, finish: str | None) -> dict:
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}

    def usage_of(final: dict | None, pieces: int) -> dict:
        final = final or {}
        prompt = int(final.get("prompt_tokens", 0))
        completion = int(final.get("completion_tokens", pieces))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def finish_of(final: dict | None) -> str:
        reason = (final or {}).get("finish_reason", "length")
        return "length" if reason == "length" else "stop"  # "eos" and stop strings are both OpenAI's "stop"

    def fail(kind: str, payload: Any) -> APIError:
        if kind == "user_error":
            return APIError(422, str(payload))
        if kind == "timeout":
            return APIError(504, f"the generation ran past {limits.request_timeout_s:g} s and was stopped "
                            "(lmlab serve --request-timeout)", "timeout")
        if kind == "disconnected":
            return APIError(400, "the client disconnected")
        raise RuntimeError(f"generation failed: {payload}")

    sse_200 = {200: {"description": "a completion (JSON), or with `stream: true` server-sent events: one "
                     "`data: {completion chunk}` per piece of text, a last chunk with `finish_reason` and `usage`, "
                     "then `data: [DONE]`",
                     "content": {"text/event-stream": {"schema": _sse_event_schema()}}}}

    async def begin(pipeline: Any, params: dict, request: Request, method: str = "stream") -> tuple[_Generation, tuple]:
        """Start a generation (``pipeline.<method>(**params)``) and wait for its first event; a 4xx if that
        is an error (a bad prompt, a template that fails, a timeout)."""
        gen = await runtime.start_generation(pipeline, params, request, method)
        first = await gen.next()
        if first[0] not in ("event", "end"):
            gen.stop()
            raise fail(*first)
        return gen, first

    async def collect(gen: _Generation, first: tuple) -> tuple[str, dict | None]:
        """(the whole text, the final event) of a generation that is not streamed."""
        texts, final, item = [], None, first
        try:
            while True:
                kind, event = item
                if kind == "end":
                    break
                if kind != "event":
                    raise fail(kind, event)
                if event.get("text"):
                    texts.append(event["text"])
                    gen.pieces += 1
                    runtime.count(tokens=1)
                if "finish_reason" in event:
                    final = event
                    break
                item = await gen.next()
        finally:
            gen.stop()
        return "".join(texts), final

    def sse_response(gen: _Generation, first: tuple, piece_chunk: Callable[[str], dict],
                     final_chunks: Callable[[dict | None], list[dict]], opening: Sequence[dict] = ()) -> StreamingResponse:
        """Server-sent events of a generation: ``opening`` chunks, one ``piece_chunk(text)`` per piece, the
        ``final_chunks(final event)``, then ``data: [DONE]`` (an error event, then ``[DONE]``, if it fails)."""

        async def events() -> AsyncIterator[str]:
            item = first
            try:
                for chunk in opening:
                    yield _sse(chunk)
                while True:
                    kind, event = item
                    if kind == "event":
                        if event.get("text"):
                            gen.pieces += 1
                            runtime.count(tokens=1)
                            yield _sse(piece_chunk(event["text"]))
                        if "finish_reason" in event:
                            kind, final = "end", event
                        else:
                            item = await gen.next()
                            continue
                    if kind == "end":
                        final = event if isinstance(event, dict) else None
                        for chunk in final_chunks(final):
                            yield _sse(chunk)
                        yield "data: [DONE]\n\n"
                        return
                    if kind in ("cancelled", "disconnected"):
                        return
                    try:
                        raise fail(kind, event)
                    except APIError as err:
                        payload = _error_payload(err.status, err.message, err.type)
                    except RuntimeError as err:
                        payload = _error_payload(500, str(err), "server_error")
                    yield _sse(payload)
                    yield "data: [DONE]\n\n"
                    return
            finally:
                gen.stop()  # a client that went away, or any other exit, stops the worker

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/v1/completions", response_model=Completion, tags=["generation"],
              responses={**sse_200, **_error_responses(400, 404, 413, 422, 429, 504)})
    async def completions(body: Req.Completion, request: Request):  # type: ignore[valid-type]
        """Continue ``prompt`` with a generator model (RNN LM or GPT). OpenAI-compatible subset."""
        served = get_model(body.model, "generator", "/v1/completions")
        cfg = sampling_config(max_new_tokens=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, repetition_penalty=body.repetition_penalty, stop=body.stop,
                              seed=body.seed)
        params = {"prompt": body.prompt, **generation_options(cfg)}
        gen, first = await begin(served.pipeline, params, request)
        cid, created = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        if not body.stream:
            text, final = await collect(gen, first)
            result = completion_chunk(cid, created, served.name, text, finish_of(final))
            result["usage"] = usage_of(final, gen.pieces)
            return result

        def last(final: dict | None) -> list[dict]:
            chunk = completion_chunk(cid, created, served.name, "", finish_of(final))
            chunk["usage"] = usage_of(final, gen.pieces)
            return [chunk]

        return sse_response(gen, first, lambda text: completion_chunk(cid, created, served.name, text, None), last)

    # -- chat completions ---------------------------------------------------------------------------------

    def chat_chunk(cid: str, created: int, name: str, delta: dict, finish: str | None) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chat_sse_200 = {200: {"description": "a chat completion (JSON), or with `stream: true` server-sent events: a "
                          "first chunk with `delta.role`, one `data: {chunk}` with `delta.content` per piece of text, "
                          "a last chunk with `finish_reason` and `usage` (plus a usage-only chunk with "
                          "`stream_options.include_usage`), then `data: [DONE]`",
                          "content": {"text/event-stream": {"schema": _sse_event_schema(ChatCompletionChunk)}}}}

    @app.post("/v1/chat/completions", response_model=ChatCompletion, tags=["generation"],
              responses={**chat_sse_200, **_error_responses(400, 404, 413, 422, 429, 504)})
    async def chat_completions(body: Req.Chat, request: Request):  # type: ignore[valid-type]
        """The assistant's reply to ``messages``, rendered by the model's chat template (GPT runs with a
        ``chat.json``, a ChatML tokenizer or ``lmlab serve --chat-template``). OpenAI-compatible subset."""
        served = get_model(body.model, "generator", "/v1/chat/completions")
        if not served.chat:
            chatty = [m.name for m in models.values() if m.chat]
            why = ("it has no chat template (give one: lmlab serve --chat-template "
                   f"{served.name}=FILE|chatml|plain)" if isinstance(served.pipeline, ChatGenerator)
                   else f"a {served.model_type} model cannot chat")
            raise APIError(400, f"model {served.name!r} cannot serve /v1/chat/completions: {why}; chat models "
                           f"served here: {', '.join(chatty) or 'none'}", "invalid_request_error", "model")
        if body.n != 1:
            raise APIError(400, f"n={body.n}: only one choice per request is supported (n=1); send several "
                           "requests for several replies", "invalid_request_error", "n")
        max_tokens = body.max_completion_tokens or body.max_tokens or limits.max_tokens
        cfg = sampling_config(max_new_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k,
                              top_p=body.top_p, repetition_penalty=body.repetition_penalty, stop=body.stop,
                              seed=body.seed)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        params = {"messages": messages, **generation_options(cfg)}
        gen, first = await begin(served.pipeline, params, request, "stream_chat")
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        if not body.stream:
            text, final = await collect(gen, first)
            return {"id": cid, "object": "chat.completion", "created": created, "model": served.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                                 "finish_reason": finish_of(final)}],
                    "usage": usage_of(final, gen.pieces)}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def last(final: dict | None) -> list[dict]:
            chunk = chat_chunk(cid, created, served.name, {}, finish_of(final))
            chunk["usage"] = usage_of(final, gen.pieces)
            if not include_usage:
                return [chunk]
            usage_only = {**chat_chunk(cid, created, served.name, {}, None), "choices": [],
                          "usage": usage_of(final, gen.pieces)}
            return [chunk, usage_only]

        opening = [chat_chunk(cid, created, served.name, {"role": "assistant", "content": ""}, None)]
        return sse_response(gen, first, lambda text: chat_chunk(cid, created, served.name, {"content": text}, None),
                            last, opening)

    # -- classify / translate / embeddings ----------------------------------------------------------------

    @app.post("/v1/classify", response_model=ClassifyResponse, tags=["classification"],
              responses=_error_responses(400, 404, 413, 422, 429, 504))
    async def classify(body: Req.Classify) -> dict:  # type: ignore[valid-type]
        """Class probabilities for each text."""
        served = get_model(body.model, "classifier", "/v1/classify")
        results = await runtime.infer_batched(("classify", served.name), served.pipeline.predict, list(body.texts))
        return {"object": "classification", "model": served.name, "labels": list(served.pipeline.labels),
                "results": [{"label": str(r["label"]), "probability": float(r["probability"]),
                             "probabilities": {str(k): float(v) for k, v in r["probabilities"].items()}}
                            for r in results]}

    @app.post("/v1/translate", response_model=TranslateResponse, tags=["translation"],
              responses=_error_responses(400, 404, 413, 422, 429, 504))
    async def translate(body: Req.Translate) -> dict:  # type: ignore[valid-type]
        """Translate each text with beam search; ``n_best`` hypotheses each, best first."""
        served = get_model(body.model, "translator", "/v1/translate")
        # on_long="error" (part of the Translator protocol): a 422 that says so, never a silently truncated source
        results = await runtime.infer_batched(
            ("translate", served.name, body.beam_size, body.max_len, body.n_best), served.pipeline.translate,
            list(body.texts), beam_size=body.beam_size, max_len=body.max_len, n_best=body.n_best, on_long="error")
        return {"object": "translation", "model": served.name, "results": [
            {"translation": r["translation"], "score": _finite(r["score"]),
             "n_best": [{"translation": h["translation"], "score": _finite(h["score"])} for h in r.get("n_best", [])]}
            for r in results]}

    @app.post("/v1/embeddings/similar", response_model=SimilarResponse, tags=["embeddings"],
              responses=_error_responses(400, 404, 413, 422, 429, 504))
    async def similar(body: Req.Similar) -> dict:  # type: ignore[valid-type]
        """Nearest neighbours (cosine) of the sum of ``positive`` minus ``negative`` word vectors."""
        served = get_model(body.model, "vectors", "/v1/embeddings/similar")
        pairs = await runtime.infer(served.pipeline.most_similar, list(body.positive), negative=list(body.negative),
                                    topn=body.topn)
        return {"object": "similar_words", "model": served.name,
                "results": [{"word": str(w), "score": _finite(s)} for w, s in pairs]}

    @app.post("/v1/embeddings/analogy", response_model=AnalogyResponse, tags=["embeddings"],
              responses=_error_responses(400, 404, 413, 422, 429, 504))
    async def analogy(body: Req.Analogy) -> dict:  # type: ignore[valid-type]
        """``a`` is to ``b`` as ``c`` is to ...? (3CosAdd or 3CosMul; the query words are excluded)."""
        served = get_model(body.model, "vectors", "/v1/embeddings/analogy")
        pairs = await runtime.infer(served.pipeline.analogy, body.a, body.b, body.c, topn=body.topn,
                                    method=_analogy_method(body.method))
        return {"object": "analogy", "model": served.name, "query": {"a": body.a, "b": body.b, "c": body.c},
                "results": [{"word": str(w), "score": _finite(s)} for w, s in pairs]}

    @app.post("/v1/fill-mask", response_model=FillMaskResponse, tags=["masked LM"],
              responses=_error_responses(400, 404, 413, 422, 429, 504))
    async def fill_mask(body: Req.FillMask) -> dict:  # type: ignore[valid-type]
        """The ``top_k`` most likely tokens (with probabilities) for each ``[MASK]`` of each text; a text with
        no ``[MASK]``, too many or too long for the model is a 422 saying which."""
        served = get_model(body.model, "fill_mask", "/v1/fill-mask")
        results = await runtime.infer(served.pipeline.fill_mask, list(body.texts), top_k=body.top_k)
        return {"object": "fill_mask", "model": served.name, "results": results}

    _add_offline_docs(app)

    # -- playground ---------------------------------------------------------------------------------------

    static = _static_dir()

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


#: where the Swagger UI / ReDoc assets (the ``fastapi-offline`` package's copies) are served
DOCS_ASSETS_URL = "/docs-assets"


def _docs_assets_dir() -> Path:
    """Swagger UI's bundle and CSS, ReDoc's standalone bundle and a favicon, as shipped by ``fastapi-offline``."""
    return Path(str(resources.files("fastapi_offline").joinpath("static")))


def _add_offline_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) loading their scripts and styles from this server only,
    so they work offline (FastAPI's recipe for self-hosted docs assets)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html

    assets = DOCS_ASSETS_URL
    app.mount(assets, StaticFiles(directory=_docs_assets_dir()), name="docs-assets")
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js", swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon.png", oauth2_redirect_url=f"{root}{redirect_url}",
            # validatorUrl null: no badge fetched from validator.swagger.io
            swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None})

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{assets}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{assets}/favicon.png", with_google_fonts=False)


def _analogy_method(method: str) -> str:
    """The API says ``3cosadd`` / ``3cosmul``; the WordVectors protocol's ``analogy`` says ``add`` / ``mul``."""
    return dict(zip(("3cosadd", "3cosmul"), ANALOGY_METHODS, strict=True))[method]


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
