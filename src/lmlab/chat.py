"""Chat templates: a conversation (a list of ``{"role", "content"}`` messages) -> the one prompt text a chat model
was trained on, rendered the way Hugging Face ``transformers`` renders it.

A chat template is Jinja code shipped with a model (``tokenizer_config.json``'s ``chat_template``), so it is
untrusted: :func:`render_template` runs it in jinja2's ``ImmutableSandboxedEnvironment`` with exactly the
environment ``transformers``' ``apply_chat_template`` builds (``trim_blocks``, ``lstrip_blocks``, the
``loopcontrols`` extension, the ``tojson`` filter without HTML escaping, ``raise_exception``,
``strftime_now``, a ``dict`` and a ``namespace`` that cannot reach dunder attributes) and the same
variables (``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``, ``tools``, ``documents``), so the
text is character for character what ``apply_chat_template(..., tokenize=False)`` returns. A template that
raises, fails, or tries to reach outside the sandbox is a :class:`~lmlab.errors.ChatTemplateError` in one line.

* :data:`ROLES` - the roles a message may have; :func:`validate_messages` checks a conversation.
* :class:`ChatFormat` - a run directory's ``chat.json``: the template, the special tokens it uses, the token ids
  that end a reply, whether prompts start with BOS.
* :data:`BUILTIN_TEMPLATES` - ``chatml`` (the default, used only when the tokenizer has ``<|im_start|>`` and
  ``<|im_end|>`` as single tokens) and ``plain`` (``User: ...`` lines, which any tokenizer can spell).
* :func:`template_from_spec` - ``--template NAME|FILE``: a built-in name, a Jinja file, or a JSON file holding
  ``chat_template`` (``tokenizer_config.json``) or ``template`` (``chat.json``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from lmlab.errors import ChatTemplateError, CheckpointError, ConfigError, DataError

__all__ = [
    "BUILTIN_TEMPLATES",
    "CHAT_FILE",
    "ROLES",
    "ChatFormat",
    "render_template",
    "template_from_spec",
    "validate_messages",
]

#: the file in a run directory that describes how the model chats (written when a Hugging Face model is imported)
CHAT_FILE = "chat.json"

#: the roles a message may have (OpenAI's chat roles; ``tool`` carries a tool's answer back to the model)
ROLES = ("system", "user", "assistant", "tool")

#: ChatML (OpenAI's chat markup, used by Qwen2, SmolLM and many fine-tunes), as Hugging Face documents it
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: role-labelled lines, for a model trained on plain text (no special tokens needed)
PLAIN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass(frozen=True)
class _Builtin:
    template: str
    #: text that ends a reply (a stop string, or a stop token when the tokenizer has it as one token)
    end_of_turn: tuple[str, ...]


#: built-in templates by name (``--template chatml``); ChatML is the default where the tokenizer can spell it
BUILTIN_TEMPLATES: dict[str, _Builtin] = {
    "chatml": _Builtin(CHATML_TEMPLATE, ("<|im_end|>",)),
    "plain": _Builtin(PLAIN_TEMPLATE, ("\nUser:", "\nSystem:")),
}

#: the tokens a tokenizer must have (as single tokens) for ChatML to be the default template
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) as one space."""
    return " ".join(str(text).split())


# --- messages ----------------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """``value`` rebuilt from JSON types only (what a template may see; no object with methods gets in)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    dump = getattr(value, "model_dump", None)  # pydantic models (the OpenAI SDK's message objects)
    if callable(dump):
        return _plain(dump(exclude_none=True), where)
    raise DataError(f"{where}: a {type(value).__name__} cannot go into a chat message; use strings, numbers, "
                    "lists and dicts")


def _text_of(content: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise DataError(f"{where}.content must be a string (or a list of {{'type': 'text', 'text': ...}} parts), "
                    f"got {type(content).__name__}")


def validate_messages(messages: Any, roles: Sequence[str] = ROLES) -> list[dict]:
    """Check a conversation and return it as plain dicts (keys whose value is None dropped, as ``transformers``
    does; content as a string). Every message needs a ``role`` in ``roles`` and a string ``content``; other keys
    (``name``, ``tool_call_id``...) pass through to the template.

    Raises:
        DataError: not a non-empty list, a message that is not an object, an unknown role or a content that is
            not text, naming the message's index.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise DataError(f"messages must be a list of {{'role', 'content'}} objects, got {type(messages).__name__}")
    if not messages:
        raise DataError("messages is empty: a chat needs at least one message")
    out = []
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        message = _plain(raw, where)
        if not isinstance(message, dict):
            raise DataError(f"{where} must be an object with 'role' and 'content', got {type(raw).__name__}")
        message = {k: v for k, v in message.items() if v is not None}
        role = message.get("role")
        if role not in roles:
            raise DataError(f"{where}.role {role!r} is not a chat role; use one of {', '.join(roles)}")
        if "content" not in message:
            raise DataError(f"{where} ({role}) has no content")
        message["content"] = _text_of(message["content"], where)
        out.append(message)
    return out


# --- rendering ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _compile(template: str):
    """The template compiled in the sandboxed environment ``transformers`` uses for chat templates."""
    import jinja2
    import jinja2.ext
    from jinja2.exceptions import SecurityError, TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    class TemplateDict:
        """``dict(...)`` and ``dict.fromkeys(...)`` without handing the template the ``dict`` type itself."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """Jinja's ``namespace`` refusing underscore-prefixed attributes (no way to CPython internals)."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise SecurityError(f"a chat template cannot store the underscore-prefixed attribute {name!r}")

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (marks assistant text for training masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    try:
        return env.from_string(template)
    except TemplateError as err:
        line = f" (line {err.lineno})" if getattr(err, "lineno", None) else ""
        raise ChatTemplateError(f"the chat template does not parse{line}: {one_line(err.message or err)}") from None


def render_template(
    template: str,
    messages: Any,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
    roles: Sequence[str] = ROLES,
    **variables: Any,
) -> str:
    """The prompt text of ``messages`` under ``template`` (Jinja), as ``transformers``' ``apply_chat_template(
    messages, tokenize=False, add_generation_prompt=...)`` renders it; ``variables`` (``tools``, ``documents``,
    ``pad_token``, a template's own switches...) are visible to the template too.

    Raises:
        ChatTemplateError: the template does not parse, calls ``raise_exception``, fails, or tries to reach
            outside the sandbox (one line).
        DataError: a malformed message or an unknown role (see :func:`validate_messages`).
    """
    from jinja2.exceptions import SecurityError, TemplateError

    if not isinstance(template, str) or not template.strip():
        raise ChatTemplateError("the chat template is empty")
    compiled = _compile(template)
    chat = validate_messages(messages, roles)
    context = {"tools": None, "documents": None, **{k: _plain(v, k) for k, v in variables.items()}}
    for name, token in (("bos_token", bos_token), ("eos_token", eos_token)):
        if token is not None:
            context[name] = str(token)
    try:
        return compiled.render(messages=chat, add_generation_prompt=bool(add_generation_prompt), **context)
    except SecurityError as err:
        raise ChatTemplateError(f"the chat template tried to reach outside its sandbox and was stopped: "
                                f"{one_line(err)}") from None
    except TemplateError as err:
        raise ChatTemplateError(f"the chat template refused the conversation: {one_line(err)}") from None
    except RecursionError:
        raise ChatTemplateError("the chat template recursed too deeply") from None
    except Exception as err:  # template code is data: any failure in it is the template's, not lmlab's
        raise ChatTemplateError(f"the chat template failed: {type(err).__name__}: {one_line(err)}") from None


# --- a model's chat format ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatFormat:
    """How one model chats: the contents of a run directory's ``chat.json``.

    ``template`` (Jinja, or None: the model has none), ``bos_token`` / ``eos_token`` (the text the template
    uses for them), ``stop_token_ids`` (ids that end a reply), ``add_bos`` (prompts start with the BOS token:
    it is put in front of the encoded prompt unless the template already wrote it), ``stop`` (extra stop
    strings; the built-in templates set their end-of-turn text here; not stored in ``chat.json``).
    """

    template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    stop_token_ids: tuple[int, ...] = ()
    add_bos: bool = False
    stop: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_dict(cls, d: Any, where: str = CHAT_FILE) -> ChatFormat:
        """Read ``chat.json``'s contents; a CheckpointError naming ``where`` and the field if malformed."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{where}: expected a JSON object, got {type(d).__name__}")
        problems = []
        template = d.get("template")
        if template is not None and not isinstance(template, str):
            problems.append("template must be a string or null")
        for name in ("bos_token", "eos_token"):
            if d.get(name) is not None and not isinstance(d[name], str):
                problems.append(f"{name} must be a string or null")
        ids = d.get("stop_token_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            problems.append("stop_token_ids must be a list of token ids (integers >= 0)")
        if not isinstance(d.get("add_bos", False), bool):
            problems.append("add_bos must be true or false")
        if problems:
            raise CheckpointError(f"{where}: " + "; ".join(problems))
        return cls(template=template, bos_token=d.get("bos_token"), eos_token=d.get("eos_token"),
                   stop_token_ids=tuple(ids), add_bos=bool(d.get("add_bos", False)))

    def to_dict(self) -> dict:
        return {"template": self.template, "bos_token": self.bos_token, "eos_token": self.eos_token,
                "stop_token_ids": list(self.stop_token_ids), "add_bos": self.add_bos}

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> ChatFormat | None:
        """``run_dir/chat.json``, or None when the run has none."""
        path = Path(run_dir) / CHAT_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: not readable JSON ({one_line(err)})") from None
        return cls.from_dict(data, str(path))

    def save(self, run_dir: str | os.PathLike) -> Path:
        """Write ``run_dir/chat.json`` (atomically)."""
        from lmlab.checkpoint import atomic_write_json

        path = Path(run_dir) / CHAT_FILE
        atomic_write_json(path, self.to_dict())
        return path

    def with_template(self, spec: str) -> ChatFormat:
        """This format with the template of ``spec`` (see :func:`template_from_spec`): a built-in one brings its
        end-of-turn stop strings; the special tokens and stop ids stay."""
        template, stop = template_from_spec(spec)
        return replace(self, template=template, stop=stop)

    def render(self, messages: Any, add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text of ``messages`` (:func:`render_template` with this format's special tokens)."""
        if self.template is None:
            raise ChatTemplateError("this model has no chat template")
        return render_template(self.template, messages, add_generation_prompt, self.bos_token, self.eos_token,
                               **variables)


def builtin_format(name: str) -> ChatFormat:
    """The :class:`ChatFormat` of a built-in template (``chatml`` or ``plain``)."""
    builtin = BUILTIN_TEMPLATES[name]
    return ChatFormat(template=builtin.template, stop=builtin.end_of_turn)


def template_from_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """(template text, end-of-turn stop strings) of ``--template SPEC``: an existing file (Jinja text, or JSON
    holding ``chat_template`` as ``tokenizer_config.json`` does, or ``template`` as ``chat.json`` does) or the
    name of a built-in template (:data:`BUILTIN_TEMPLATES`).

    Raises:
        ConfigError: neither a readable file nor a built-in name.
    """
    path = Path(spec)
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"chat template {spec}: cannot read it as UTF-8 text ({one_line(err)})") from None
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise ConfigError(f"chat template {spec}: not valid JSON ({one_line(err)})") from None
            found = data.get("chat_template", data.get("template")) if isinstance(data, dict) else None
            if isinstance(found, list):  # tokenizer_config.json may hold named templates: take "default"
                found = next((t.get("template") for t in found if isinstance(t, dict) and t.get("name") == "default"),
                             None)
            if not isinstance(found, str):
                raise ConfigError(f"chat template {spec}: a JSON file needs a string \"chat_template\" (as in "
                                  "tokenizer_config.json) or \"template\" (as in chat.json)")
            text = found
        if not text.strip():
            raise ConfigError(f"chat template {spec}: the file is empty")
        try:
            _compile(text)  # a template that does not parse is refused now, not at the first chat request
        except ChatTemplateError as err:
            raise ChatTemplateError(f"chat template {spec}: {err}") from None
        return text, ()
    if spec in BUILTIN_TEMPLATES:
        builtin = BUILTIN_TEMPLATES[spec]
        return builtin.template, builtin.end_of_turn
    raise ConfigError(f"chat template {spec!r}: no such file, and not a built-in template "
                      f"({', '.join(BUILTIN_TEMPLATES)}); give a Jinja file, a tokenizer_config.json, or a built-in name")
