"""``lmlab serve RUN_DIR...``: the HTTP API and playground (FastAPI + uvicorn)."""

from __future__ import annotations

import errno
import socket

import click

from lmlab.errors import ConfigError
from lmlab.serve import ServeLimits

_D = ServeLimits()


@click.command("serve")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
@click.option("--device", default="cpu", show_default=True, help="Device the models run on (cpu, cuda, cuda:1).")
@click.option("--max-body-bytes", default=_D.max_body_bytes, show_default=True, type=click.IntRange(1),
              help="Larger request bodies get 413.")
@click.option("--max-input-chars", default=_D.max_input_chars, show_default=True, type=click.IntRange(1),
              help="Longest prompt, text or word accepted (422 beyond).")
@click.option("--max-batch", default=_D.max_batch, show_default=True, type=click.IntRange(1),
              help="Most texts in one classify/translate request.")
@click.option("--max-tokens", default=_D.max_tokens, show_default=True, type=click.IntRange(1),
              help="Cap on a completion's max_tokens and a translation's max_len.")
@click.option("--max-beam-size", default=_D.max_beam_size, show_default=True, type=click.IntRange(1),
              help="Cap on /v1/translate beam_size.")
@click.option("--max-topn", default=_D.max_topn, show_default=True, type=click.IntRange(1),
              help="Cap on topn of the embeddings endpoints.")
@click.option("--max-concurrent-generations", default=_D.max_concurrent_generations, show_default=True,
              type=click.IntRange(1), help="Completions running at once; more wait in a queue.")
@click.option("--max-concurrent-inference", default=_D.max_concurrent_inference, show_default=True,
              type=click.IntRange(1), help="Classify/translate/embeddings requests running at once; more wait.")
@click.option("--queue-timeout", default=_D.queue_timeout_s, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request waits for a free slot before it gets 429.")
@click.option("--request-timeout", default=_D.request_timeout_s, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds a request may run before it is stopped (504).")
@click.option("--max-batch-texts", default=_D.max_batch_texts, show_default=True, type=click.IntRange(1),
              help="Classify/translate requests waiting together run as one model call of up to this many texts "
              "(1: no batching).")
@click.option("--max-messages", default=_D.max_messages, show_default=True, type=click.IntRange(1),
              help="Most messages in one /v1/chat/completions request.")
@click.option("--max-chat-chars", default=_D.max_chat_chars, show_default=True, type=click.IntRange(1),
              help="Most characters of all messages of one chat request together.")
@click.option("--chat-template", "chat_templates", multiple=True, metavar="[MODEL=]TEMPLATE",
              help="Chat template for /v1/chat/completions: a Jinja file, a tokenizer_config.json/chat.json, or "
              "chatml/plain. MODEL= replaces that model's own; without it, it serves every GPT run that has none. "
              "Repeatable.")
@click.option("--torch-threads", default=0, show_default=True, type=click.IntRange(0),
              help="torch intra-op threads of the server process (0: torch's default; 1 suits a few cores).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Server processes, each with its own copy of the models and its own limits (more cores).")
@click.option("--keep-alive", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds an idle keep-alive connection stays open (longer than clients' own expiry avoids "
              "reusing a connection the server is closing).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="uvicorn's log level.")
def serve(run_dirs, host, port, device, max_body_bytes, max_input_chars, max_batch, max_tokens, max_beam_size, max_topn,
          max_concurrent_generations, max_concurrent_inference, queue_timeout, request_timeout, max_batch_texts,
          max_messages, max_chat_chars, chat_templates, torch_threads, workers, keep_alive, log_level) -> None:
    """Serve trained run directories over HTTP: OpenAI-style /v1/completions, /v1/chat/completions, /v1/classify, /v1/translate,
    /v1/embeddings/{similar,analogy}, and a playground page at /. Model names are the run directories' base names."""
    import uvicorn

    from lmlab.serve import create_app

    check_port_free(host, port)  # before loading anything or printing the banner
    limits = ServeLimits(
        max_body_bytes=max_body_bytes, max_input_chars=max_input_chars, max_batch=max_batch, max_tokens=max_tokens,
        max_beam_size=max_beam_size, max_topn=max_topn, max_concurrent_generations=max_concurrent_generations,
        max_concurrent_inference=max_concurrent_inference, queue_timeout_s=queue_timeout,
        request_timeout_s=request_timeout, max_batch_texts=max_batch_texts, max_messages=max_messages,
        max_chat_chars=max_chat_chars,
    )
    templates = parse_chat_templates(chat_templates)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    app = create_app(run_dirs, limits=limits, device=device, chat_templates=templates)  # all load, or we stop here
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    for model in app.state.models.values():
        chat = "  (chat)" if model.chat else ""
        click.echo(f"  {model.name:24s} {model.kind:10s} {model.model_type:12s} {model.run_dir}{chat}")
    click.echo(f"lmlab serving {len(app.state.models)} model(s): playground http://{shown}:{port}/ , "
               f"API docs http://{shown}:{port}/docs")
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=keep_alive)
        return
    import os

    from lmlab.serve import SPEC_ENV, serve_spec

    del app  # each worker process loads its own copy
    os.environ[SPEC_ENV] = serve_spec(run_dirs, limits, device, torch_threads, templates)
    click.echo(f"starting {workers} worker processes (the limits apply to each)")
    uvicorn.run("lmlab.serve:create_app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, timeout_keep_alive=keep_alive)


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` the way uvicorn will (SO_REUSEADDR), then let go; a ConfigError (exit 2) naming the
    port and the fix if that fails, so a busy port stops ``lmlab serve`` before the models load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        where = f"{host}:{port}"
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} is already in use on {host} (another server is listening there); stop "
                              f"it, or choose a free port with --port {port + 1 if port < 65535 else 8000}") from None
        if err.errno == errno.EACCES:
            raise ConfigError(f"not allowed to listen on {where} (ports below 1024 need privileges); choose a port "
                              "above 1023 with --port 8000") from None
        raise ConfigError(f"cannot listen on {where}: {err.strerror or err}; check --host (an address of this "
                          "machine, or 0.0.0.0 for all) and --port") from None


def parse_chat_templates(values: tuple[str, ...]) -> dict[str, str]:
    """``--chat-template [MODEL=]TEMPLATE`` values -> {model name or "": template}; a ConfigError for a model
    named twice. ``MODEL=`` is only split off when TEMPLATE is not itself an existing file."""
    from pathlib import Path

    out: dict[str, str] = {}
    for value in values:
        name, spec = "", value
        if "=" in value and not Path(value).is_file():
            name, spec = value.split("=", 1)
        if name in out:
            raise ConfigError(f"--chat-template given twice for {name or 'every model'}: {out[name]!r} and {spec!r}")
        out[name] = spec
    return out
