"""Chat: templates rendered exactly as ``transformers`` renders them, in a sandbox; ``GPTGenerator.chat``;
``lmlab gpt chat``; ``POST /v1/chat/completions`` through the official ``openai`` client.

The models are tiny GPT runs trained here for two steps on a slice of Tiny Shakespeare plus some Chinese: one
with lmlab's byte-level BPE (no chat tokens, so no template) and a copy whose tokenizer gained
``<|im_start|>``/``<|im_end|>`` (so ChatML is its default) - what an imported Hugging Face model looks like.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from lmlab.chat import CHATML_TEMPLATE, ChatFormat, render_template, validate_messages
from lmlab.errors import ChatTemplateError, DataError
from test_playground import browser  # noqa: F401  (fixture: headless Chromium, skipped where not installed)

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Mistral-style: roles must alternate, checked with raise_exception; a system prompt is folded into the first turn
ALTERNATING_TEMPLATE = """{{ bos_token }}
{% if messages[0]['role'] == 'system' %}
    {% set system = messages[0]['content'] %}
    {% set loop_messages = messages[1:] %}
{% else %}
    {% set system = none %}
    {% set loop_messages = messages %}
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if message['role'] == 'user' %}
        {% if loop.first and system is not none %}
            {{ '[INST] ' + system + '\n\n' + message['content'] + ' [/INST]' }}
        {% else %}
            {{ '[INST] ' + message['content'] + ' [/INST]' }}
        {% endif %}
    {% else %}
        {{ ' ' + message['content'] | tojson + eos_token }}
    {% endif %}
{% endfor %}"""

CONVERSATION = [
    {"role": "system", "content": "You answer briefly. <b>&</b>"},
    {"role": "user", "content": "Who wrote Hamlet?  "},
    {"role": "assistant", "content": "Shakespeare, \"the Bard\"."},
    {"role": "user", "content": "你好！用中文回答 🙂"},
]

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def _hf_tokenizer(template: str):
    """A PreTrainedTokenizerFast over a byte-level BPE trained here (no download) with ``template``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", *CHAT_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([m["content"] for m in CONVERSATION] * 5, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", chat_template=template)


# --- templates ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, LLAMA3_TEMPLATE, ALTERNATING_TEMPLATE],
                         ids=["chatml", "llama3", "raise_exception"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_template_output_is_identical_to_transformers(template, add_generation_prompt):
    hf = _hf_tokenizer(template)
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        got = render_template(template, messages, add_generation_prompt, bos_token="<s>", eos_token="</s>")
        assert got == expected


def test_raise_exception_in_a_template_is_one_line_chat_template_error():
    bad = [CONVERSATION[1], CONVERSATION[1]]  # two user turns in a row
    with pytest.raises(Exception, match="must alternate"):  # transformers refuses it too
        _hf_tokenizer(ALTERNATING_TEMPLATE).apply_chat_template(bad, tokenize=False)
    with pytest.raises(ChatTemplateError, match="refused the conversation: Conversation roles must alternate") as err:
        render_template(ALTERNATING_TEMPLATE, bad, bos_token="<s>", eos_token="</s>")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
    "{{ messages.append({'role': 'user', 'content': 'x'}) }}",  # the sandbox is immutable
    "{% set ns = namespace() %}{% set ns._private = 1 %}",
    "{{ self.__init__.__globals__ }}",
])
def test_a_template_reaching_outside_the_sandbox_is_refused(escape):
    with pytest.raises(ChatTemplateError, match="sandbox") as err:
        render_template(escape, CONVERSATION)
    assert "\n" not in str(err.value)


def test_broken_templates_are_one_line_errors():
    with pytest.raises(ChatTemplateError, match="does not parse"):
        render_template("{% for m in messages %}", CONVERSATION)
    with pytest.raises(ChatTemplateError, match="failed: TypeError"):
        render_template("{{ messages[0]['content'] + 1 }}", CONVERSATION)
    with pytest.raises(ChatTemplateError, match="empty"):
        render_template("  ", CONVERSATION)


def test_template_helpers_match_transformers():
    template = ("{{ messages | tojson }}|{{ strftime_now('%Y') | length }}|{% set d = dict(a=1) %}{{ d.a }}"
                "{% for m in messages %}{% if loop.index0 == 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}"
                "{% generation %}G{% endgeneration %}")
    hf = _hf_tokenizer(template)
    assert render_template(template, CONVERSATION) == hf.apply_chat_template(CONVERSATION, tokenize=False)


def test_messages_are_validated_naming_the_index():
    with pytest.raises(DataError, match=r"messages\[1\]\.role 'robot' is not a chat role; use one of system, user"):
        validate_messages([{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}])
    with pytest.raises(DataError, match=r"messages\[0\]\.content must be a string"):
        validate_messages([{"role": "user", "content": 3}])
    with pytest.raises(DataError, match=r"messages\[0\] \(user\) has no content"):
        validate_messages([{"role": "user"}])
    with pytest.raises(DataError, match="empty"):
        validate_messages([])
    parts = validate_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                                "name": None}])
    assert parts == [{"role": "user", "content": "ab"}]  # None-valued keys dropped, as transformers does


# --- tiny runs ----------------------------------------------------------------------------------------------


TINY = ["train.max_steps=2", "train.progress=false", "train.tensorboard=false", "train.eval_every=0",
        "train.device=cpu", "train.warmup_steps=0", "train.num_threads=1", "train.save_every=0", "train.log_every=100",
        "model.block_size=128", "model.embed_dim=32", "model.num_layers=1", "model.num_heads=2", "model.dropout=0",
        "data.vocab_size=300", "train.batch_size=4"]


def _add_chat_tokens(src: Path, dest: Path) -> Path:
    """A copy of the BPE run ``src`` whose tokenizer has ``<|im_start|>``/``<|im_end|>`` (new ids, new embedding rows),
    as an imported chat model has."""
    import torch

    from lmlab import checkpoint
    from lmlab.data.tokenizers import BPETokenizer
    from lmlab.data.tokens import TokenCodec
    from lmlab.models.gpt import GPT, GPTConfig

    shutil.copytree(src, dest)
    codec = TokenCodec.load(dest)
    hf = codec.tokenizer.tokenizer
    hf.add_special_tokens(CHAT_TOKENS)
    TokenCodec(BPETokenizer(hf)).save(dest)
    config = json.loads((dest / "config.json").read_text())
    config["model"]["vocab_size"] = hf.get_vocab_size()
    (dest / "config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    checkpoint.save_weights(dest / checkpoint.WEIGHTS_FILE, GPT(GPTConfig(**config["model"])))
    return dest


@pytest.fixture(scope="module")
def runs(shared_data, tmp_path_factory) -> dict[str, Path]:
    from lmlab.recipes.gpt import GPTRecipe

    root = tmp_path_factory.mktemp("chat-runs")
    with gzip.open(shared_data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as src:
        text = src.read(20_000)
    text += "\n".join(["你好，世界！今天天气很好。我们一起去公园散步吧。"] * 40) + "\n"
    (root / "text.txt").write_text(text, encoding="utf-8")
    plain = root / "bpe-plain"
    GPTRecipe.from_preset("bpe", TINY, data=str(root / "text.txt"), log=lambda *_: None).train(plain)
    return {"plain": plain, "chatml": _add_chat_tokens(plain, root / "bpe-chatml")}


@pytest.fixture(scope="module")
def chatml(runs):
    from lmlab import load

    return load(runs["chatml"])


def test_chatml_is_the_default_only_when_the_tokenizer_has_its_tokens(runs, chatml):
    from lmlab import load
    from lmlab.pipelines.base import ChatGenerator

    assert isinstance(chatml, ChatGenerator) and chatml.can_chat
    assert chatml.chat_template_source == "default: chatml" and chatml.info()["chat_template"] == "default: chatml"
    plain = load(runs["plain"])
    assert isinstance(plain, ChatGenerator) and not plain.can_chat
    with pytest.raises(ChatTemplateError, match="no chat template.*--template"):
        plain.chat([{"role": "user", "content": "hi"}])
    plain.set_chat_template("plain")
    assert plain.chat([{"role": "user", "content": "hi"}], max_new_tokens=3, seed=0)["completion_tokens"] <= 3


def test_chat_prompt_is_the_rendered_template_encoded(chatml):
    ids = chatml.chat_prompt(CONVERSATION)
    text = render_template(CHATML_TEMPLATE, CONVERSATION)
    assert ids == chatml.codec.encode(text)
    im_start = chatml.codec.tokenizer.token_to_id("<|im_start|>")
    assert ids[0] == im_start and ids.count(im_start) == 5  # one token each, not spelled out


def test_chat_prompt_ids_equal_transformers_tokenized_template(chatml):
    """The same tokenizer in ``transformers``: ``apply_chat_template(tokenize=True)`` gives the same ids."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=chatml.codec.tokenizer.tokenizer, chat_template=CHATML_TEMPLATE)
    for messages in (CONVERSATION, CONVERSATION[1:2]):
        expected = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected  # a BatchEncoding in v5
        assert chatml.chat_prompt(messages) == list(expected)


def test_chat_stops_on_any_stop_token_id(runs, tmp_path):
    """chat.json's stop_token_ids end the reply: a token of a seeded reply made a stop id cuts it there."""
    from lmlab import load
    from lmlab.generation import SamplingConfig

    run = tmp_path / "run"
    shutil.copytree(runs["chatml"], run)
    pipe = load(run)
    msgs = CONVERSATION[1:2]
    sampling = dict(max_new_tokens=8, temperature=1.0, seed=5)
    reply_ids = pipe.model.generate(pipe.chat_prompt(msgs), SamplingConfig(**sampling), eos_id=pipe.chat_stops()[0])[0]
    k = next(k for k in range(1, len(reply_ids)) if reply_ids[k] not in reply_ids[:k])
    ChatFormat(template=CHATML_TEMPLATE, stop_token_ids=(12345, reply_ids[k])).save(run)
    pipe = load(run)
    assert pipe.chat_template_source == "chat.json"
    out = pipe.chat(msgs, **sampling)
    assert out["finish_reason"] == "eos" and out["completion_tokens"] == k
    assert out["text"] == pipe.codec.decode(reply_ids[:k])
    assert out["message"] == {"role": "assistant", "content": out["text"]}


def test_chat_json_bos_is_added_once(runs, tmp_path):
    from lmlab import load

    run = tmp_path / "run"
    shutil.copytree(runs["chatml"], run)
    ChatFormat(template=LLAMA3_TEMPLATE, bos_token="<bos>", eos_token="<eos>", add_bos=True).save(run)
    pipe = load(run)
    bos = pipe.codec.tokenizer.token_to_id("<bos>")
    ids = pipe.chat_prompt(CONVERSATION[1:2])
    assert ids[0] == bos and ids[1] != bos  # the template wrote it: not added twice
    pipe.codec.add_bos = True  # a codec that frames every text with BOS, as well as the template writing it
    assert pipe.chat_prompt(CONVERSATION[1:2]) == ids
    ChatFormat(template=CHATML_TEMPLATE, bos_token="<bos>", add_bos=True).save(run)
    assert load(run).chat_prompt(CONVERSATION[1:2])[:2] == [bos, pipe.codec.tokenizer.token_to_id("<|im_start|>")]


def test_bad_chat_json_is_a_checkpoint_error(runs, tmp_path):
    from lmlab import load
    from lmlab.errors import CheckpointError

    run = tmp_path / "run"
    shutil.copytree(runs["chatml"], run)
    (run / "chat.json").write_text('{"template": 3, "stop_token_ids": ["x"]}')
    with pytest.raises(CheckpointError, match="chat.json: template must be a string or null; stop_token_ids"):
        load(run)


# --- the CLI ------------------------------------------------------------------------------------------------


def _chat_cli(args: list[str], stdin: str, monkeypatch, capsys) -> tuple[int, str, str]:
    import io

    from lmlab.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))  # not a terminal: one user message per line
    rc = main(["gpt", "chat", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_chat_reads_stdin_keeps_history_and_resets(runs, monkeypatch, capsys):
    from lmlab.pipelines.gpt import GPTGenerator

    seen: list[list[dict]] = []
    original = GPTGenerator.stream_chat

    def spy(self, messages, **options):
        seen.append([dict(m) for m in messages])
        return original(self, messages, **options)

    monkeypatch.setattr(GPTGenerator, "stream_chat", spy)
    stdin = "Hello there\n\nHow are you?\n/reset\nHello there\n/quit\nnever read\n"
    rc, out, err = _chat_cli([str(runs["chatml"]), "--system", "Be brief.", "-n", "6", "--seed", "3", "-t", "0.9"],
                             stdin, monkeypatch, capsys)
    assert rc == 0, err
    assert [len(m) for m in seen] == [2, 4, 2]  # system+user; +assistant+user; after /reset: system+user
    assert seen[0] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert seen[1][2]["role"] == "assistant" and seen[1][3] == {"role": "user", "content": "How are you?"}
    assert seen[2] == seen[0]
    assert out.startswith(seen[1][2]["content"])  # the reply was printed, and kept in the history


def test_cli_chat_without_template_exits_2_saying_how_to_fix(runs, monkeypatch, capsys):
    rc, _, err = _chat_cli([str(runs["plain"])], "hi\n", monkeypatch, capsys)
    assert rc == 2 and "no chat template" in err and "--template" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _chat_cli([str(runs["plain"]), "--template", "nope.jinja"], "hi\n", monkeypatch, capsys)
    assert rc == 2 and "not a built-in template (chatml, plain)" in err
    rc, out, err = _chat_cli([str(runs["plain"]), "--template", "plain", "-n", "3"], "hi\n", monkeypatch, capsys)
    assert rc == 0 and out.endswith("\n"), err


# --- the server, through the openai client -------------------------------------------------------------------


class Scripted:
    """A step function that says ``ids`` (greedy), then ``end``: a model whose reply is known."""

    def __init__(self, ids: list[int], end: int, vocab_size: int) -> None:
        self.ids, self.end, self.vocab_size = ids, end, vocab_size

    def __call__(self, input_ids, state):
        import torch

        n = 0 if state is None else state
        logits = torch.full((input_ids.shape[0], self.vocab_size), float("-inf"))  # (B, V): one token possible
        logits[:, self.ids[n] if n < len(self.ids) else self.end] = 0.0
        return logits, n + 1


def _app(runs):
    from lmlab.serve import ServeLimits, create_app

    limits = ServeLimits(max_tokens=32, max_messages=4, max_chat_chars=400)
    return create_app([runs["chatml"], runs["plain"]], limits=limits)


@pytest.fixture(scope="module")
def server_app(runs):
    return _app(runs)


@pytest.fixture(scope="module")
def openai_client(server_app):
    import openai
    from fastapi.testclient import TestClient

    with TestClient(server_app) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def test_models_list_the_chat_endpoint_for_chat_models(openai_client):
    cards = {m.id: m for m in openai_client.models.list().data}
    assert "/v1/chat/completions" in cards["bpe-chatml"].endpoints
    assert "/v1/chat/completions" not in cards["bpe-plain"].endpoints


def test_chat_completion_matches_the_pipeline_and_seed_reproduces(openai_client, server_app):
    pipe = server_app.state.models["bpe-chatml"].pipeline
    msgs = CONVERSATION[1:2]
    for options in (dict(temperature=0.0), dict(temperature=1.0, top_p=0.9, seed=7)):
        reply = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=12, **options)
        expected = pipe.chat(msgs, max_new_tokens=12, **options)
        assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].message.content == expected["text"]
        assert reply.choices[0].finish_reason == ("length" if expected["finish_reason"] == "length" else "stop")
        assert reply.usage.prompt_tokens == len(pipe.chat_prompt(msgs))
        assert reply.usage.completion_tokens == expected["completion_tokens"] <= 12
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    again = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=12, seed=7, top_p=0.9)
    assert again.choices[0].message.content == reply.choices[0].message.content


def test_chat_streams_through_openai(openai_client, server_app):
    pipe = server_app.state.models["bpe-chatml"].pipeline
    msgs = CONVERSATION[1:2]
    full = pipe.chat(msgs, max_new_tokens=20, temperature=0.0)["text"]
    stream = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=20, temperature=0,
                                                   stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1


def test_chat_stop_strings_and_max_tokens(server_app, openai_client, monkeypatch):
    pipe = server_app.state.models["bpe-chatml"].pipeline
    reply = "Hello world. Goodbye world."
    ids = pipe.codec.encode(reply)
    end = pipe.codec.tokenizer.token_to_id("<|im_end|>")
    monkeypatch.setattr(pipe.model, "step_cached", Scripted(ids, end, pipe.codec.vocab_size))
    msgs = CONVERSATION[1:2]
    whole = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=32)
    assert whole.choices[0].message.content == reply and whole.choices[0].finish_reason == "stop"
    for stop in (". G", [". G", "xyz"]):
        cut = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=32, stop=stop)
        assert cut.choices[0].message.content == "Hello world" and cut.choices[0].finish_reason == "stop"
        streamed = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=32, stop=stop,
                                                         stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "Hello world"
    short = openai_client.chat.completions.create(model="bpe-chatml", messages=msgs, max_tokens=2)
    assert short.usage.completion_tokens == 2 and short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == pipe.codec.decode(ids[:2])


def test_streaming_chinese_never_splits_a_character(runs, server_app, openai_client, monkeypatch):
    pipe = server_app.state.models["bpe-chatml"].pipeline
    reply = "你好，世界！🙂 天气很好。"
    ids = pipe.codec.encode(reply)
    assert len(ids) > len(reply)  # byte-level tokens: characters are split across tokens
    end = pipe.codec.tokenizer.token_to_id("<|im_end|>")
    monkeypatch.setattr(pipe.model, "step_cached", Scripted(ids, end, pipe.codec.vocab_size))
    chunks = list(openai_client.chat.completions.create(model="bpe-chatml", messages=CONVERSATION[1:2], stream=True,
                                                        max_tokens=32))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == reply and len(pieces) > 1
    assert all("\ufffd" not in p for p in pieces)
    assert chunks[-1].choices[0].finish_reason == "stop"  # <|im_end|> ended it
    assert chunks[-1].usage.completion_tokens == len(ids)


def test_live_uvicorn_server_streams_to_the_openai_client(runs):
    import openai

    from serve_fixtures import LiveServer

    with LiveServer(_app(runs)) as server:  # its own app: a server's shutdown closes the app's worker threads
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        got = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="bpe-chatml", messages=CONVERSATION[1:2], max_tokens=8, temperature=0, stream=True) if c.choices)
        plain = client.chat.completions.create(model="bpe-chatml", messages=CONVERSATION[1:2], max_tokens=8,
                                               temperature=0)
        assert got == plain.choices[0].message.content


@pytest.mark.parametrize("label,body,status,needle", [
    ("n>1", {"n": 2}, 400, "only one choice"),
    ("unknown role", {"messages": [{"role": "robot", "content": "hi"}]}, 422, "messages.0.role"),
    ("too many messages", {"messages": [{"role": "user", "content": "hi"}] * 5}, 422, "at most 4"),
    ("too many chars", {"messages": [{"role": "user", "content": "x" * 300}] * 2}, 422, "--max-chat-chars"),
    ("no template", {"model": "bpe-plain"}, 400, "no chat template"),
    ("template refuses", {"messages": [{"role": "assistant", "content": "hi"}], "model": "bpe-alt"}, 422,
     "must alternate"),
    ("unknown model", {"model": "gpt-4"}, 404, "not served"),
    ("empty messages", {"messages": []}, 422, "messages"),
])
def test_bad_chat_requests_get_a_4xx_with_one_line(runs, tmp_path, label, body, status, needle):
    from fastapi.testclient import TestClient

    from lmlab.serve import ServeLimits, create_app

    alt = tmp_path / "bpe-alt"
    shutil.copytree(runs["chatml"], alt)
    ChatFormat(template=ALTERNATING_TEMPLATE, bos_token="<bos>", eos_token="<eos>").save(alt)
    app = create_app([runs["chatml"], runs["plain"], alt],
                     limits=ServeLimits(max_tokens=32, max_messages=4, max_chat_chars=400))
    request = {"model": "bpe-chatml", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json=request)
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert needle in message and "\n" not in message


def test_serve_chat_template_option_gives_a_template(runs, tmp_path):
    from fastapi.testclient import TestClient

    from lmlab.cli.serve import parse_chat_templates
    from lmlab.errors import ConfigError
    from lmlab.serve import create_app

    jinja = tmp_path / "t.jinja"
    jinja.write_text(LLAMA3_TEMPLATE)
    templates = parse_chat_templates((f"bpe-chatml={jinja}", "plain"))
    app = create_app([runs["chatml"], runs["plain"]], chat_templates=templates)
    assert app.state.models["bpe-chatml"].pipeline.chat_format.template == LLAMA3_TEMPLATE
    assert app.state.models["bpe-plain"].chat
    with TestClient(app) as http:
        r = http.post("/v1/chat/completions", json={"model": "bpe-plain", "max_tokens": 3,
                                                    "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    with pytest.raises(ConfigError, match="gpt-9.*not served"):
        create_app([runs["plain"]], chat_templates={"gpt-9": "plain"})


def test_serve_refuses_a_chat_template_that_is_missing_or_does_not_parse_even_when_unused(runs, tmp_path):
    """--chat-template TEMPLATE (for every model without one) is read and parsed at start-up even when every
    served model has its own template: a typo in the file name or the Jinja is exit 2 naming it, never a server
    that ignores it (or fails every chat request)."""
    from lmlab.errors import ConfigError
    from lmlab.serve import create_app

    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}{{ m['content'] }}")
    for spec, needle in ((str(tmp_path / "missing.jinja"), "missing.jinja': no such file"),
                         (str(broken), "broken.jinja: the chat template does not parse")):
        with pytest.raises(ConfigError) as err:  # ChatTemplateError is a ConfigError: exit 2 in the CLI
            create_app([runs["chatml"]], chat_templates={"": spec})
        assert needle in str(err.value) and "\n" not in str(err.value), err.value


def test_worker_processes_get_the_chat_templates(runs, tmp_path, monkeypatch):
    """lmlab serve --workers N hands --chat-template to each worker through $LMLAB_SERVE_SPEC (absolute paths)."""
    from lmlab.serve import SPEC_ENV, ServeLimits, create_app_from_env, serve_spec

    jinja = tmp_path / "t.jinja"
    jinja.write_text(CHATML_TEMPLATE)
    monkeypatch.chdir(tmp_path)
    spec = serve_spec([runs["plain"]], ServeLimits(), "cpu", chat_templates={"": "t.jinja"})
    assert json.loads(spec)["chat_templates"] == {"": str(jinja)}
    monkeypatch.setenv(SPEC_ENV, spec)
    monkeypatch.chdir(Path("/"))
    assert create_app_from_env().state.models["bpe-plain"].chat


def test_playground_chats_keeping_the_conversation(browser, runs, monkeypatch):  # noqa: F811
    """The playground's chat mode (a model with /v1/chat/completions): each prompt is a user message, the reply
    streams in, the history goes with the next request; 'New chat' forgets it."""
    from selenium.webdriver.common.by import By

    from serve_fixtures import LiveServer
    from test_playground import _pick, _wait

    app = _app(runs)
    pipe = app.state.models["bpe-chatml"].pipeline
    seen: list[list[dict]] = []
    original = type(pipe).stream_chat

    def spy(self, messages, **options):
        seen.append([dict(m) for m in messages])
        return original(self, messages, **options)

    monkeypatch.setattr(type(pipe), "stream_chat", spy)
    reply = "Well met, 朋友!"
    end = pipe.codec.tokenizer.token_to_id("<|im_end|>")
    monkeypatch.setattr(pipe.model, "step_cached", Scripted(pipe.codec.encode(reply), end, pipe.codec.vocab_size))
    driver = browser
    with LiveServer(app) as server:
        driver.get(server.url + "/")
        _wait(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
        _pick(driver, "bpe-plain")
        assert not driver.find_element(By.ID, "chat-mode-label").is_displayed()  # no template: no chat
        _pick(driver, "bpe-chatml")
        driver.find_element(By.ID, "chat-mode").click()
        assert driver.find_element(By.ID, "new-chat").is_displayed()
        box = driver.find_element(By.ID, "max-tokens")
        box.clear()
        box.send_keys("30")  # the server's limit here is 32
        for i, words in enumerate(["Good morrow!", "What news?"]):
            prompt = driver.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys(words)
            driver.find_element(By.ID, "generate").click()
            _wait(lambda n=i: len(seen) > n and driver.find_element(By.ID, "generation-status").text.startswith("done"))
            assert driver.find_element(By.ID, "completion-text").text == reply
        assert seen[-1] == [{"role": "user", "content": "Good morrow!"}, {"role": "assistant", "content": reply},
                            {"role": "user", "content": "What news?"}]
        shown = driver.find_element(By.ID, "completion-prompt").text
        assert shown == f"user: Good morrow!\nassistant: {reply}\nuser: What news?\nassistant: "
        driver.find_element(By.ID, "new-chat").click()
        prompt.send_keys("Again")
        driver.find_element(By.ID, "generate").click()
        _wait(lambda: len(seen) == 3 and driver.find_element(By.ID, "generation-status").text.startswith("done"))
        assert seen[-1] == [{"role": "user", "content": "Again"}]
