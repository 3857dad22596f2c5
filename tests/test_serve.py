"""The HTTP server (lmlab.serve) against real, tiny run directories of every model family.

Every endpoint goes through the app factory's TestClient; streaming, disconnects, timeouts and the busy/429
path also run against a live uvicorn server on 127.0.0.1. A schemathesis run against /openapi.json checks
that no generated request gets a 5xx.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from lmlab.errors import CheckpointError, ConfigError
from lmlab.serve import ServeLimits, _analogy_method, create_app
from serve_fixtures import NAMES, LiveServer, serve_runs  # noqa: F401  (session fixture)

GENERATORS = ("lm", "gpt", "seqgan")
PROMPTS = {"lm": "ROMEO:", "gpt": "ROMEO:", "seqgan": "a man"}  # in each model's vocabulary
LIMITS = ServeLimits(max_tokens=64, max_input_chars=500, max_batch=8, max_beam_size=6, max_topn=20,
                     max_body_bytes=20_000)


@pytest.fixture(scope="module")
def app(serve_runs):  # noqa: F811
    return create_app(list(serve_runs.values()), limits=LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def generators(serve_runs):  # noqa: F811
    return [NAMES[f] for f in GENERATORS if f in serve_runs]


def pipeline(app, family):
    return app.state.models[NAMES[family]].pipeline


def sse_events(text: str) -> list:
    """Parse a server-sent-event body into JSON payloads (and the literal "[DONE]")."""
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


class Paced:
    """A real pipeline whose ``stream`` sleeps ``delay`` s per token (to hold a generation open) and records
    how many tokens it produced and whether the stream was closed."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.produced, self.closed = 0, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, prompt, **kwargs):
        try:
            for event in self.inner.stream(prompt, **kwargs):
                time.sleep(self.delay)
                if not (isinstance(event, dict) and "finish_reason" in event):
                    self.produced += 1
                yield event
        finally:
            self.closed = True


def paced_app(serve_runs, delay, **limits):  # noqa: F811
    app = create_app([serve_runs["lm"], serve_runs["classifier"]], limits=ServeLimits(**limits))
    served = app.state.models[NAMES["lm"]]
    served.pipeline = Paced(served.pipeline, delay)
    return app, served.pipeline


# --- informational endpoints -------------------------------------------------------------------------------


def test_health_models_and_playground(client, serve_runs):  # noqa: F811
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert sorted(health["models"]) == sorted(NAMES[f] for f in serve_runs)
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    cards = {card["id"]: card for card in listing["data"]}
    expected_kind = {"classifier": "classifier", "lm": "generator", "gpt": "generator", "seqgan": "generator",
                     "translator": "translator", "vectors": "vectors", "glove": "vectors"}
    for family in serve_runs:
        card = cards[NAMES[family]]
        assert card["kind"] == expected_kind[family]
        assert card["object"] == "model" and card["owned_by"] == "lmlab"
        assert card["info"], f"{NAMES[family]}: the pipeline has no info() (the pipeline interface requires one)"
        assert card["info"].get("parameters", 1) > 0
        assert client.get(f"/v1/models/{NAMES[family]}").json() == card
    missing = client.get("/v1/models/no-such-model")
    assert missing.status_code == 404 and "no-such-model" in missing.json()["error"]["message"]
    page = client.get("/")
    assert page.status_code == 200 and "lmlab playground" in page.text
    assert client.get("/static/playground.js").status_code == 200
    unknown_route = client.get("/v2/nothing")
    assert unknown_route.status_code == 404 and "no such endpoint" in unknown_route.json()["error"]["message"]


def test_openapi_schema_states_the_limits(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/health", "/v1/models", "/v1/completions", "/v1/classify", "/v1/translate",
                 "/v1/embeddings/similar", "/v1/embeddings/analogy"):
        assert path in paths
    comps = schema["components"]["schemas"]
    completion = comps["CompletionRequest"]["properties"]
    assert completion["max_tokens"]["maximum"] == LIMITS.max_tokens
    assert completion["prompt"]["maxLength"] == LIMITS.max_input_chars
    assert completion["temperature"]["minimum"] == 0
    assert completion["top_p"]["exclusiveMinimum"] == 0 and completion["top_p"]["maximum"] == 1
    assert comps["ClassifyRequest"]["properties"]["texts"]["maxItems"] == LIMITS.max_batch
    assert comps["TranslateRequest"]["properties"]["beam_size"]["maximum"] == LIMITS.max_beam_size
    assert "text/event-stream" in paths["/v1/completions"]["post"]["responses"]["200"]["content"]
    for code in ("404", "413", "422", "429"):
        assert code in paths["/v1/classify"]["post"]["responses"]


# --- completions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", GENERATORS)
def test_completion_matches_pipeline_and_is_reproducible(client, app, serve_runs, family):  # noqa: F811
    if family not in serve_runs:
        pytest.fail(f"no {family} run directory was built")
    name = NAMES[family]
    body = {"model": name, "prompt": PROMPTS[family], "max_tokens": 12, "temperature": 0.9, "top_p": 0.95, "seed": 7}
    first = client.post("/v1/completions", json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["object"] == "text_completion" and data["model"] == name and data["id"].startswith("cmpl-")
    choice = data["choices"][0]
    assert choice["finish_reason"] in ("length", "stop") and choice["text"]
    usage = data["usage"]
    assert 1 <= usage["completion_tokens"] <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # same seed, same text; and the same text as the pipeline itself produces
    assert client.post("/v1/completions", json=body).json()["choices"][0]["text"] == choice["text"]
    direct = "".join(
        e["text"] if isinstance(e, dict) else e
        for e in pipeline(app, family).stream(PROMPTS[family], max_new_tokens=12, temperature=0.9, top_k=0, top_p=0.95,
                                              repetition_penalty=1.0, stop=[], seed=7)
        if isinstance(e, str) or "text" in e)
    assert direct == choice["text"]
    greedy = {**body, "temperature": 0, "seed": None}
    assert (client.post("/v1/completions", json=greedy).json()["choices"][0]["text"]
            == client.post("/v1/completions", json={**greedy, "seed": 3}).json()["choices"][0]["text"])


@pytest.mark.parametrize("family", GENERATORS)
def test_completion_stop_string_is_cut(client, serve_runs, family):  # noqa: F811
    if family not in serve_runs:
        pytest.fail(f"no {family} run directory was built")
    body = {"model": NAMES[family], "prompt": PROMPTS[family], "max_tokens": 60, "temperature": 1.0, "seed": 1}
    free = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert len(free) > 2
    stop = free[len(free) // 2: len(free) // 2 + 1]  # a piece that certainly occurs in this seeded output
    cut = client.post("/v1/completions", json={**body, "stop": [stop, "\n\n\n\n"]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop", "stream() must end with {'finish_reason': 'stop', ...} on a stop string"
    assert stop not in cut["text"] and free.startswith(cut["text"])


@pytest.mark.parametrize("family", GENERATORS)
def test_streaming_yields_every_piece_then_done(client, serve_runs, family):  # noqa: F811
    if family not in serve_runs:
        pytest.fail(f"no {family} run directory was built")
    body = {"model": NAMES[family], "prompt": PROMPTS[family], "max_tokens": 16, "temperature": 0.8, "seed": 11}
    plain = client.post("/v1/completions", json=body).json()
    with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks, last = events[:-2], events[-2]
    assert len(chunks) >= 2 and all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]
    assert last["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert last["usage"] == plain["usage"]
    assert len({c["id"] for c in events[:-1]}) == 1


def _asgi_post(app, path: str, body: dict, disconnect_after: int | None = None,
               disconnect_after_s: float | None = None) -> list[tuple[float, dict]]:
    """Drive the ASGI app directly, recording every message it sends with its time; optionally the client
    'disconnects' once ``disconnect_after`` body chunks have arrived, or after ``disconnect_after_s`` seconds."""
    raw = json.dumps(body).encode()
    sent: list[tuple[float, dict]] = []

    async def run() -> None:
        started = time.monotonic()
        delivered = False
        chunks = asyncio.Event()

        async def receive() -> dict:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": raw, "more_body": False}
            if disconnect_after_s is not None:  # like uvicorn: once gone, answer at once without awaiting
                if time.monotonic() < started + disconnect_after_s:
                    await asyncio.sleep(started + disconnect_after_s - time.monotonic())
                return {"type": "http.disconnect"}
            if disconnect_after is not None:
                while sum(1 for _, m in sent if m["type"] == "http.response.body") < disconnect_after:
                    await chunks.wait()
                    chunks.clear()
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:
            sent.append((time.monotonic(), message))
            chunks.set()

        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]}
        await app(scope, receive, send)

    asyncio.run(run())
    return sent


def test_stream_sends_each_token_as_it_is_produced(serve_runs):  # noqa: F811
    delay = 0.03
    app, paced = paced_app(serve_runs, delay)
    sent = _asgi_post(app, "/v1/completions", {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 10,
                                               "temperature": 0.8, "seed": 5, "stream": True})
    assert sent[0][1]["status"] == 200
    bodies = [(t, m["body"].decode()) for t, m in sent[1:] if m["body"]]
    # one ASGI message per event: each token leaves the server on its own, not buffered to the end
    assert all(b.startswith("data: ") and b.count("\n\n") == 1 for _, b in bodies)
    assert bodies[-1][1] == "data: [DONE]\n\n" and len(bodies) == paced.produced + 2
    # the first piece went out while the generation still had >= (n - 2) paced tokens to go
    assert bodies[-2][0] - bodies[0][0] >= (paced.produced - 2) * delay * 0.9


def test_disconnect_mid_stream_stops_the_generation(serve_runs):  # noqa: F811
    app, paced = paced_app(serve_runs, 0.02)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 500, "temperature": 0.8, "stream": True}
    sent = _asgi_post(app, "/v1/completions", body, disconnect_after=3)
    deadline = time.monotonic() + 5
    while app.state.runtime.stats["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.state.runtime.stats["cancelled"] == 1 and app.state.runtime.stats["active"] == 0
    assert paced.closed and paced.produced < 100, paced.produced
    assert not any(m.get("body", b"").startswith(b"data: [DONE]") for _, m in sent)


def test_disconnect_while_waiting_for_a_plain_completion_stops_it(serve_runs):  # noqa: F811
    app, paced = paced_app(serve_runs, 0.02)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 500, "temperature": 0.8}
    _asgi_post(app, "/v1/completions", body, disconnect_after_s=0.4)
    deadline = time.monotonic() + 5
    while app.state.runtime.snapshot()["active"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = app.state.runtime.snapshot()
    assert stats["cancelled"] == 1 and stats["active"] == 0, (stats, paced.produced)
    assert paced.closed and paced.produced < 100, paced.produced


def test_live_server_streams_incrementally_and_stops_on_disconnect(serve_runs):  # noqa: F811
    delay = 0.03
    app, paced = paced_app(serve_runs, delay, max_tokens=500)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 12, "temperature": 0.8, "seed": 2,
            "stream": True}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        arrivals = []
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.monotonic())
        assert len(arrivals) == paced.produced + 2
        assert arrivals[-2] - arrivals[0] >= (paced.produced - 2) * delay * 0.9  # spread out, not one burst
        # now a long generation that the client abandons after three events
        paced.produced, paced.closed = 0, False
        with http.stream("POST", "/v1/completions", json={**body, "max_tokens": 500, "seed": None}) as response:
            for n, _line in enumerate(response.iter_lines()):
                if n >= 5:
                    break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            gens = http.get("/health").json()["generations"]
            if gens["active"] == 0:
                break
            time.sleep(0.05)
        assert gens["active"] == 0 and gens["cancelled"] == 1, gens
        assert paced.closed and paced.produced < 200, paced.produced


def test_a_long_generation_does_not_stall_other_requests_and_busy_gets_429(serve_runs):  # noqa: F811
    app, paced = paced_app(serve_runs, 0.05, max_concurrent_generations=1, queue_timeout_s=0.3)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 300, "temperature": 0.8, "stream": True}
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        started, stop = threading.Event(), threading.Event()

        def slow_reader() -> None:  # a 15 s generation, abandoned when the test is done with it
            with httpx.Client(base_url=server.url, timeout=30) as own, own.stream("POST", "/v1/completions",
                                                                                 json=body) as response:
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        started.set()
                    if stop.is_set():
                        break

        reader = threading.Thread(target=slow_reader)
        reader.start()
        try:
            assert started.wait(20)
            # the only generation slot is taken: another completion waits queue_timeout_s, then 429
            busy = http.post("/v1/completions", json={**body, "stream": False, "max_tokens": 2})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["error"]["message"]
            # ... while classification and health answer (inference is off the event loop)
            clf = http.post("/v1/classify", json={"model": NAMES["classifier"], "texts": ["a fine film"]})
            assert clf.status_code == 200
            health = http.get("/health").json()
            assert health["generations"]["active"] == 1  # answered while the generation is still running
            assert health["generations"]["busy"] == 1
        finally:
            stop.set()
            reader.join(30)
        deadline = time.monotonic() + 10
        while app.state.runtime.snapshot()["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.runtime.snapshot()["cancelled"] == 1 and paced.produced < 300


def test_generations_queue_for_a_slot_within_the_timeout(serve_runs):  # noqa: F811
    app, _ = paced_app(serve_runs, 0.01, max_concurrent_generations=1, queue_timeout_s=30)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 15, "temperature": 0.8}
    with LiveServer(app) as server:
        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                replies = await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(4)))
            return [r.status_code for r in replies]

        assert asyncio.run(burst()) == [200] * 4
    assert app.state.runtime.stats["completed"] == 4


def test_request_timeout_stops_generation(serve_runs):  # noqa: F811
    app, paced = paced_app(serve_runs, 0.05, request_timeout_s=0.5)
    body = {"model": NAMES["lm"], "prompt": "ROMEO:", "max_tokens": 100, "temperature": 0.8}
    with TestClient(app) as client:
        reply = client.post("/v1/completions", json=body)
        assert reply.status_code == 504 and "--request-timeout" in reply.json()["error"]["message"]
        with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            events = sse_events("".join(response.iter_text()))
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == 504
        assert 1 <= len(events) - 2 < 100
        time.sleep(0.3)
        assert app.state.runtime.stats["timed_out"] == 2 and paced.produced < 60


# --- classify / translate / embeddings ---------------------------------------------------------------------


def test_classify_matches_the_pipeline(client, app, shared_data):
    name = NAMES["classifier"]
    texts = ["a gripping , beautifully acted film", "dull , lifeless and far too long", "ok"]
    reply = client.post("/v1/classify", json={"model": name, "texts": texts})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    labels = pipeline(app, "classifier").labels
    assert data["labels"] == list(labels) and data["model"] == name
    expected = pipeline(app, "classifier").predict(texts)
    assert len(data["results"]) == 3
    for got, want in zip(data["results"], expected, strict=True):
        assert got["label"] == want["label"] and got["label"] in labels
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-6)
        assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert got["probability"] == max(got["probabilities"].values())


def test_translate_matches_the_pipeline(client, app, serve_runs):  # noqa: F811
    if "translator" not in serve_runs:
        pytest.fail("no translator run directory was built")
    name = NAMES["translator"]
    texts = ["i am cold .", "he is here ."]
    reply = client.post("/v1/translate", json={"model": name, "texts": texts, "beam_size": 3, "n_best": 2,
                                               "max_len": 12})
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    want = pipeline(app, "translator").translate(texts, beam_size=3, max_len=12, n_best=2)
    assert [r["translation"] for r in results] == [w["translation"] for w in want]
    assert all(len(r["n_best"]) == 2 and r["n_best"][0]["translation"] == r["translation"] for r in results)
    bad = client.post("/v1/translate", json={"model": name, "texts": texts, "beam_size": 2, "n_best": 3})
    assert bad.status_code == 422 and "n_best" in bad.json()["error"]["message"]


@pytest.mark.parametrize("family", ["vectors", "glove"])
def test_embeddings_similar_and_analogy_match_the_vectors(client, app, serve_runs, family):  # noqa: F811
    if family not in serve_runs:
        pytest.fail(f"no {family} run directory was built")
    name = NAMES[family]
    kv = pipeline(app, family)
    reply = client.post("/v1/embeddings/similar", json={"model": name, "positive": ["king"], "topn": 5})
    assert reply.status_code == 200, reply.text
    got = [(r["word"], r["score"]) for r in reply.json()["results"]]
    want = kv.most_similar(["king"], topn=5)
    assert [w for w, _ in got] == [w for w, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    reply = client.post("/v1/embeddings/analogy", json={"model": name, "a": "man", "b": "king", "c": "woman",
                                                        "topn": 3})
    assert reply.status_code == 200, reply.text
    assert [r["word"] for r in reply.json()["results"]] == [w for w, _ in kv.analogy("man", "king", "woman", topn=3)]
    mul = client.post("/v1/embeddings/analogy", json={"model": name, "a": "man", "b": "king", "c": "woman",
                                                      "topn": 3, "method": "3cosmul"})
    assert mul.status_code == 200, mul.text
    want = kv.analogy("man", "king", "woman", topn=3, method=_analogy_method("3cosmul"))
    assert [(r["word"], r["score"]) for r in mul.json()["results"]] == [(w, pytest.approx(x)) for w, x in want]
    both = client.post("/v1/embeddings/similar", json={"model": name, "positive": ["king", "woman"],
                                                       "negative": ["man"], "topn": 4}).json()["results"]
    assert [r["word"] for r in both] == [w for w, _ in kv.most_similar(["king", "woman"], negative=["man"], topn=4)]
    oov = client.post("/v1/embeddings/similar", json={"model": name, "positive": ["kingg"]})
    assert oov.status_code == 422
    message = oov.json()["error"]["message"]
    assert "kingg" in message and "king" in message.replace("kingg", "")  # suggests the closest spelling
    oov = client.post("/v1/embeddings/analogy", json={"model": name, "a": "man", "b": "kingg", "c": "woman"})
    assert oov.status_code == 422 and "kingg" in oov.json()["error"]["message"]


class Counted:
    """A real classifier or translator that records the number of texts of each call and holds its slot for
    ``delay`` seconds, so that concurrent requests pile up behind it."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay, self.calls = inner, delay, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, texts):
        self.calls.append(len(texts))
        time.sleep(self.delay)
        return self.inner.predict(texts)

    def translate(self, texts, beam_size=5, max_len=None, n_best=1, on_long=None):
        self.calls.append(len(texts))
        time.sleep(self.delay)
        return self.inner.translate(texts, beam_size=beam_size, max_len=max_len, n_best=n_best, on_long=on_long)


def _post_concurrently(app, path: str, bodies: list[dict]) -> list[httpx.Response]:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve.test", timeout=60) as http:
            return await asyncio.gather(*(http.post(path, json=body) for body in bodies))

    return asyncio.run(go())


def test_concurrent_classify_requests_are_batched_into_fewer_calls(serve_runs):  # noqa: F811
    app = create_app([serve_runs["classifier"]], limits=ServeLimits(max_concurrent_inference=1))
    served = app.state.models[NAMES["classifier"]]
    inner = served.pipeline
    served.pipeline = counted = Counted(inner, 0.2)
    texts = [[f"a film with {i} good scenes"] for i in range(9)] + [["dull", "far too long"]]
    replies = _post_concurrently(app, "/v1/classify", [{"model": served.name, "texts": t} for t in texts])
    assert [r.status_code for r in replies] == [200] * len(texts)
    for sent, reply in zip(texts, replies, strict=True):  # each request gets the answers for its own texts
        want = inner.predict(sent)
        got = reply.json()["results"]
        assert [g["label"] for g in got] == [w["label"] for w in want]
        assert [g["probability"] for g in got] == pytest.approx([w["probability"] for w in want], abs=1e-5)
    assert sum(counted.calls) == 11 and len(counted.calls) < len(texts) and max(counted.calls) > 1, counted.calls
    stats = app.state.runtime.batch_snapshot()
    assert stats["requests"] == len(texts) and stats["calls"] == len(counted.calls) and stats["texts"] == 11


def test_a_text_the_model_refuses_fails_only_its_own_request_in_a_batch(serve_runs):  # noqa: F811
    app = create_app([serve_runs["translator"]], limits=ServeLimits(max_concurrent_inference=1))
    served = app.state.models[NAMES["translator"]]
    inner = served.pipeline
    served.pipeline = counted = Counted(inner, 0.2)
    texts = ["i am cold .", "he is here .", " ".join(["word"] * 60), "we are late ."]
    bodies = [{"model": served.name, "texts": [t], "beam_size": 2} for t in texts]
    replies = _post_concurrently(app, "/v1/translate", bodies)
    assert [r.status_code for r in replies] == [200, 200, 422, 200], [r.text for r in replies]
    assert "60" in replies[2].json()["error"]["message"]  # names the sentence's length
    for text, reply in zip(texts, replies, strict=True):
        if reply.status_code == 200:
            want = inner.translate([text], beam_size=2)[0]["translation"]
            assert reply.json()["results"][0]["translation"] == want
    assert max(counted.calls) > 1  # they were batched, and the batch was retried one request at a time


# --- bad input: always a 4xx with a message, never a 500 ---------------------------------------------------


def _bad_cases() -> list:
    gen, clf = NAMES["lm"], NAMES["classifier"]
    ok = {"model": gen, "prompt": "ROMEO:", "max_tokens": 4}
    return [
        ("malformed json", "/v1/completions", b'{"model": "x", "prompt": ', 400, "malformed JSON"),
        ("not utf-8", "/v1/classify", b'{"model": "\xff\xfe", "texts": ["a"]}', 400, "UTF-8"),
        ("empty body", "/v1/classify", b"", 422, "body is empty"),
        ("infinite number", "/v1/completions", b"1e999", 422, "JSON object"),
        ("lone surrogate", "/v1/classify", b'{"model": "%s", "texts": ["\\ud800"]}' % clf.encode(), 422, "texts"),
        ("infinite temperature", "/v1/completions", b'{"model": "%s", "prompt": "a", "temperature": 1e999}'
         % gen.encode(), 422, "temperature"),
        ("not an object", "/v1/completions", [1, 2], 422, "body"),
        ("wrong type prompt", "/v1/completions", {**ok, "prompt": 5}, 422, "prompt"),
        ("wrong type max_tokens", "/v1/completions", {**ok, "max_tokens": "many"}, 422, "max_tokens"),
        ("missing prompt", "/v1/completions", {"model": gen}, 422, "prompt"),
        ("empty prompt", "/v1/completions", {**ok, "prompt": ""}, 422, "prompt"),
        ("negative temperature", "/v1/completions", {**ok, "temperature": -0.1}, 422, "temperature"),
        ("top_p zero", "/v1/completions", {**ok, "top_p": 0}, 422, "top_p"),
        ("top_p above one", "/v1/completions", {**ok, "top_p": 1.5}, 422, "top_p"),
        ("max_tokens above cap", "/v1/completions", {**ok, "max_tokens": LIMITS.max_tokens + 1}, 422, "max_tokens"),
        ("max_tokens zero", "/v1/completions", {**ok, "max_tokens": 0}, 422, "max_tokens"),
        ("prompt too long", "/v1/completions", {**ok, "prompt": "a" * (LIMITS.max_input_chars + 1)}, 422, "prompt"),
        ("typo in a field", "/v1/completions", {**ok, "max_token": 4}, 422, "max_token"),
        ("n above one", "/v1/completions", {**ok, "n": 2}, 422, "n"),
        ("five stop strings", "/v1/completions", {**ok, "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
        ("unknown model", "/v1/completions", {**ok, "model": "gpt-4"}, 404, "gpt-4"),
        ("classifier asked to complete", "/v1/completions", {**ok, "model": clf}, 400, "classifier"),
        ("generator asked to classify", "/v1/classify", {"model": gen, "texts": ["x"]}, 400, "generator"),
        ("unknown classifier", "/v1/classify", {"model": "nope", "texts": ["x"]}, 404, "nope"),
        ("no texts", "/v1/classify", {"model": clf, "texts": []}, 422, "texts"),
        ("blank text", "/v1/classify", {"model": clf, "texts": ["   "]}, 422, "blank"),
        ("texts not a list", "/v1/classify", {"model": clf, "texts": "one text"}, 422, "texts"),
        ("too many texts", "/v1/classify", {"model": clf, "texts": ["a"] * (LIMITS.max_batch + 1)}, 422, "texts"),
        ("generator asked to translate", "/v1/translate", {"model": gen, "texts": ["x"]}, 400, "translator"),
        ("beam above cap", "/v1/translate", {"model": gen, "texts": ["x"], "beam_size": 99}, 422, "beam_size"),
        ("classifier asked for neighbours", "/v1/embeddings/similar", {"model": clf, "positive": ["a"]}, 400, "vectors"),
        ("analogy missing c", "/v1/embeddings/analogy", {"model": clf, "a": "x", "b": "y"}, 422, "c: Field required"),
        ("oversized body", "/v1/classify", {"model": clf, "texts": ["word " * 5000]}, 413, "--max-body-bytes"),
    ]


@pytest.mark.parametrize("label,path,body,status,needle", _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_input_gets_a_4xx_with_a_message(client, label, path, body, status, needle):
    if isinstance(body, bytes):
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert needle in error["message"], error
    assert error["code"] == status and error["type"]


def test_oversized_chunked_body_is_refused_without_reading_it_all(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1000  # no Content-Length: the limit is enforced while reading

    reply = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert str(LIMITS.max_body_bytes) in reply.json()["error"]["message"]


def test_non_json_content_type_is_a_4xx(client):
    reply = client.post("/v1/classify", content=b"model=x", headers={"content-type": "text/plain"})
    assert 400 <= reply.status_code < 500


# --- the app factory and the CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_only_assets_this_server_serves(client, page):
    """Issue 21: /docs and /redoc loaded Swagger UI / ReDoc from a CDN, so they were blank offline."""
    import re

    html = client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "://" not in html.text, "an absolute URL: the page would need the network"
    urls = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(r"url: '([^']+)'", html.text)
    urls += re.findall(r'spec-url="([^"]+)"', html.text)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, f"{page} loads no script"
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), url
        got = client.get(url)
        assert got.status_code == 200, url
        assert len(got.content) > (100_000 if url.endswith(".js") else 100), url
    if page == "/docs":
        assert '"validatorUrl": null' in html.text  # no badge fetched from validator.swagger.io
        assert client.get("/docs/oauth2-redirect").status_code == 200
    schema_paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/docs", "/redoc")) for p in schema_paths)


def test_cli_serve_on_a_busy_port_exits_2_before_the_banner(serve_runs, monkeypatch, capsys):  # noqa: F811
    """Issue 21: serve on a busy port printed the "serving ... playground" banner, then exited 3."""
    import socket

    import uvicorn

    from lmlab.cli import main

    def must_not_start(*args, **kwargs):
        raise AssertionError("uvicorn started although the port is taken")

    monkeypatch.setattr(uvicorn, "run", must_not_start)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["serve", str(serve_runs["classifier"]), "--port", str(port)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert "serving" not in out and "playground" not in out and NAMES["classifier"] not in out
    assert len(err.strip().splitlines()) == 1
    assert f"port {port} is already in use" in err and "--port" in err


def _with_nonfinite(run_dir, dest, file_name, tensor_name=None):
    """A copy of ``run_dir`` whose ``file_name`` has NaN and inf in one tensor (the first, or ``tensor_name``)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, dest)
    tensors = load_file(dest / file_name)
    name = tensor_name or next(k for k, v in tensors.items() if v.is_floating_point())
    t = tensors[name].clone()
    t.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), float("nan")], dtype=t.dtype)
    tensors[name] = t
    save_file(tensors, dest / file_name)
    return dest, name


def test_weights_holding_nan_are_refused_with_a_one_line_reason(serve_runs, tmp_path, capsys):  # noqa: F811
    """Issue 21: a weights file full of NaN was served without a word. A diverged run is refused (exit 2)."""
    from lmlab import load
    from lmlab.cli import main

    run, name = _with_nonfinite(serve_runs["classifier"], tmp_path / "diverged", "model.safetensors")
    load(run)  # still loads for inspection: only serving it is refused
    with pytest.raises(CheckpointError, match=rf"3 of [\d,]+ values of weight '{name}' are NaN or infinite"):
        create_app([run])
    assert main(["serve", str(run), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(run) in err and "train.lr" in err
    vectors, _ = _with_nonfinite(serve_runs["vectors"], tmp_path / "vectors-nan", "vectors.safetensors")
    with pytest.raises(CheckpointError, match="'vectors'"):
        create_app([vectors])
    create_app([serve_runs["classifier"], serve_runs["vectors"]])  # the originals are served


def test_pipelines_are_served_by_the_protocol_they_implement(app, serve_runs):  # noqa: F811
    from lmlab.pipelines import base

    expected = {"classifier": base.TextClassifier, "lm": base.TextGenerator, "gpt": base.TextGenerator,
                "seqgan": base.TextGenerator, "translator": base.Translator, "vectors": base.WordVectors,
                "glove": base.WordVectors}
    for family, protocol in expected.items():
        pipe = pipeline(app, family)
        assert isinstance(pipe, protocol), family
        assert base.capability_of(pipe) == app.state.models[NAMES[family]].kind

    class Echo:  # any object implementing TextGenerator is served as a generator, whatever its class
        def stream(self, prompt, **options):
            yield {"text": prompt[::-1][: options["max_new_tokens"]]}
            yield {"finish_reason": "length", "prompt_tokens": 1, "completion_tokens": 1}

        def generate(self, prompt, **options):
            return {"text": prompt[::-1]}

        def info(self):
            return {"model_type": "echo"}

    assert base.capability_of(Echo()) == "generator"
    with pytest.raises(ConfigError, match="implements none of the pipeline protocols"):
        base.capability_of(object())
    served = app.state.models[NAMES["lm"]]
    original = served.pipeline
    try:
        served.pipeline = Echo()
        with TestClient(app) as c:
            got = c.post("/v1/completions", json={"model": NAMES["lm"], "prompt": "abc", "max_tokens": 2})
        assert got.status_code == 200 and got.json()["choices"][0]["text"] == "cb"
    finally:
        served.pipeline = original


def test_create_app_refuses_bad_run_dirs_and_limits(serve_runs, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="nothing to serve"):
        create_app([])
    with pytest.raises(CheckpointError):
        create_app([tmp_path / "missing"])
    twin = tmp_path / "copy" / serve_runs["classifier"].name
    twin.parent.mkdir()
    twin.symlink_to(serve_runs["classifier"], target_is_directory=True)
    with pytest.raises(ConfigError, match="both be served"):
        create_app([serve_runs["classifier"], twin])
    with pytest.raises(ConfigError, match="max_tokens"):
        ServeLimits(max_tokens=0)
    with pytest.raises(ConfigError, match="queue_timeout_s"):
        ServeLimits(queue_timeout_s=-1)


def test_cli_serve_builds_the_app_with_the_flags(serve_runs, monkeypatch, capsys):  # noqa: F811
    import uvicorn

    from lmlab.cli import main

    monkeypatch.setattr("lmlab.cli.serve.check_port_free", lambda host, port: None)  # tested on its own below
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level, timeout_keep_alive: seen.update(
        app=app, host=host, port=port, keep_alive=timeout_keep_alive))
    rc = main(["serve", str(serve_runs["classifier"]), str(serve_runs["lm"]), "--port", "8123", "--max-tokens", "7",
               "--max-concurrent-generations", "2", "--queue-timeout", "1.5", "--max-batch-texts", "16"])
    assert rc == 0
    limits = seen["app"].state.limits
    assert (seen["host"], seen["port"], seen["keep_alive"]) == ("127.0.0.1", 8123, 30.0)
    assert (limits.max_tokens, limits.max_concurrent_generations, limits.queue_timeout_s) == (7, 2, 1.5)
    assert limits.max_batch_texts == 16
    out = capsys.readouterr().out
    assert NAMES["classifier"] in out and "http://127.0.0.1:8123/" in out
    assert main(["serve", str(serve_runs["classifier"] / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_cli_serve_with_workers_hands_uvicorn_an_app_factory(serve_runs, monkeypatch):  # noqa: F811
    import uvicorn

    from lmlab.cli import main
    from lmlab.serve import SPEC_ENV, create_app_from_env

    monkeypatch.setenv(SPEC_ENV, "")  # restored after the test
    monkeypatch.setattr("lmlab.cli.serve.check_port_free", lambda host, port: None)
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda target, **kwargs: seen.update(target=target, **kwargs))
    rc = main(["serve", str(serve_runs["classifier"]), str(serve_runs["lm"]), "--workers", "2", "--max-tokens", "9"])
    assert rc == 0
    assert seen["target"] == "lmlab.serve:create_app_from_env" and seen["factory"] and seen["workers"] == 2
    app = create_app_from_env()  # what each worker process does
    assert sorted(app.state.models) == sorted([NAMES["classifier"], NAMES["lm"]])
    assert app.state.limits.max_tokens == 9
    monkeypatch.setenv(SPEC_ENV, "")
    with pytest.raises(ConfigError, match="--workers"):
        create_app_from_env()


def test_openai_python_client_works_against_the_server(serve_runs):  # noqa: F811
    openai = pytest.importorskip("openai", reason="the OpenAI client is in the dev extra")
    app = create_app([serve_runs["lm"]])
    with LiveServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [NAMES["lm"]]
        done = client.completions.create(model=NAMES["lm"], prompt="ROMEO:", max_tokens=8, seed=3, temperature=0.7)
        assert done.choices[0].text and done.usage.completion_tokens >= 1
        pieces = [c.choices[0].text for c in client.completions.create(
            model=NAMES["lm"], prompt="ROMEO:", max_tokens=8, seed=3, temperature=0.7, stream=True)]
        assert "".join(pieces) == done.choices[0].text
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="nope", prompt="x", max_tokens=2)
        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model=NAMES["lm"], prompt="x", max_tokens=2, temperature=-1)


# --- schema-driven fuzzing ---------------------------------------------------------------------------------


def test_schemathesis_finds_no_server_errors(serve_runs):  # noqa: F811
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings

    fuzz_limits = ServeLimits(max_tokens=4, max_input_chars=60, max_batch=3, max_beam_size=2, max_topn=5)
    app = create_app(list(serve_runs.values()), limits=fuzz_limits)
    valid = {}
    for card in app.state.models.values():
        for endpoint in card.card()["endpoints"]:
            valid.setdefault(endpoint, card.name)
    known = list(app.state.models[NAMES["vectors"]].pipeline.words[:50])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    statuses: dict[str, list[int]] = {}
    deadline = time.monotonic() + 45

    def make_test(op):
        op_deadline = time.monotonic() + 6  # each operation gets its share of the time, and at least 3 calls

        @settings(max_examples=25, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def fuzz(case):
            if time.monotonic() > min(deadline, op_deadline) and len(statuses.get(op.path, [])) >= 3:
                return
            if isinstance(case.body, dict) and op.path in valid and isinstance(case.body.get("model"), str):
                case.body["model"] = valid[op.path]  # real models, so that the other fields get exercised
                for key in ("positive", "negative", "a", "b", "c"):  # half the words: real ones
                    value = case.body.get(key)
                    if isinstance(value, str) and len(value) % 2 == 0:
                        case.body[key] = known[len(value) % len(known)]
                    elif isinstance(value, list):
                        case.body[key] = [known[len(w) % len(known)] if isinstance(w, str) and len(w) % 2 == 0
                                          else w for w in value]
            response = case.call()
            statuses.setdefault(op.path, []).append(response.status_code)
            if response.status_code >= 500:
                failures.append((op.path, case.body, response.status_code, response.text[:300]))
            case.validate_response(response, excluded_checks=_excluded_checks(schemathesis))

        return fuzz

    for operation in schema.get_all_operations():
        make_test(operation.ok())()
    assert not failures, failures[:3]
    # every operation was really exercised (random inputs rarely form a valid analogy, so 2xx answers are not
    # required here: the endpoint tests above check every endpoint's accepted requests)
    for path in ("/v1/completions", "/v1/classify", "/v1/translate", "/v1/embeddings/similar",
                 "/v1/embeddings/analogy", "/health"):
        assert statuses.get(path), (path, "no request was generated")
    assert any(200 <= code < 300 for codes in statuses.values() for code in codes)
    assert sum(len(codes) for codes in statuses.values()) >= 60


def _excluded_checks(schemathesis) -> list:
    """Checks that judge *valid-by-schema* inputs: an out-of-vocabulary word or n_best > beam_size is
    schema-valid yet rightly refused with 4xx, so 'positive data acceptance' does not apply here."""
    from schemathesis.specs.openapi import checks

    names = ("positive_data_acceptance", "missing_required_header", "unsupported_method", "ignored_auth")
    return [getattr(checks, n) for n in names if hasattr(checks, n)]
