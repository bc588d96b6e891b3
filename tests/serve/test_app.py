"""HTTP behaviour of the real Serve application (tiny model, real store, loopback)."""
from __future__ import annotations

import asyncio
import json
import os

import httpx
import pytest


@pytest.fixture(scope="module")
def client(rag_url, auth):
    with httpx.Client(base_url=rag_url, headers=auth, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(rag_url):
    with httpx.Client(base_url=rag_url, timeout=120) as c:
        yield c


def test_healthz_is_open(anonymous):
    response = anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_rag_cites_the_document_matching_the_question(client, docs):
    response = client.post("/v1/rag", json={"question": docs["nile"], "top_k": 2, "max_new_tokens": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    top = body["documents"][0]
    assert (top["id"], top["text"], top["source"]) == ("nile", docs["nile"], "nile.md")
    assert top["score"] == pytest.approx(1.0, abs=1e-3)
    assert len(body["documents"]) == 2 and body["documents"][1]["score"] < top["score"]
    assert isinstance(body["answer"], str)
    timings = body["timings"]
    assert 0 < timings["retrieve_s"] <= timings["total_s"] and timings["generate_s"] > 0


def test_rag_uses_default_top_k(client, docs):
    response = client.post("/v1/rag", json={"question": docs["paris"]})
    assert response.status_code == 200, response.text
    assert [d["id"] for d in response.json()["documents"]][:1] == ["paris"]
    assert len(response.json()["documents"]) == 2  # serve_settings.default_top_k


@pytest.mark.parametrize("body, field", [
    ({"question": "x" * 301}, "question"),
    ({"question": "   "}, "question"),
    ({"question": "q", "top_k": 4}, "top_k"),
    ({"question": "q", "top_k": 0}, "top_k"),
    ({"question": "q", "max_new_tokens": 9}, "max_new_tokens"),
    ({"question": "q", "unknown": 1}, "unknown"),
    ({"top_k": 1}, "question"),
])
def test_limits_give_422_naming_the_field(client, body, field):
    response = client.post("/v1/rag", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(err["loc"][-1] == field for err in detail), detail


def test_oversized_body_is_413_and_app_still_answers(client, docs):
    response = client.post("/v1/rag", content=b'{"question": "' + b"a" * 5000 + b'"}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert client.post("/v1/rag", json={"question": docs["tokyo"]}).status_code == 200


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe"])
def test_malformed_json_is_4xx_never_5xx(client, raw):
    response = client.post("/v1/rag", content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, (response.status_code, response.text)


def test_auth_required_and_app_still_answers(anonymous, client, auth, docs):
    token = auth["Authorization"].split()[1]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
        response = anonymous.post("/v1/rag", json={"question": "q"}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert anonymous.get("/v1/models").status_code == 401
    response = client.post("/v1/rag", json={"question": docs["oxygen"]})
    assert response.status_code == 200 and response.json()["documents"][0]["id"] == "oxygen"


def test_openapi_declares_the_request_bodies(anonymous):
    spec = anonymous.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, name in (("/v1/rag", "RagRequest"), ("/v1/chat/completions", "ChatRequest")):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{name}"}
    assert schemas["RagRequest"]["required"] == ["question"]
    assert {"messages", "stream", "max_tokens", "top_k", "footnotes", "stream_options"} <= set(
        schemas["ChatRequest"]["properties"])
    # Nested models resolve inside the document, as Swagger UI (/docs) needs.
    assert schemas["ChatRequest"]["properties"]["messages"]["items"] == {"$ref": "#/components/schemas/ChatMessage"}
    assert "ChatMessage" in schemas and "ContentPart" in schemas
    assert anonymous.get("/docs").status_code == 200


def test_footnotes_append_the_sources_to_the_answer(client, docs):
    ask = {"messages": [{"role": "user", "content": docs["nile"]}], "max_tokens": 2, "top_k": 2}
    plain = client.post("/v1/chat/completions", json=ask).json()
    noted = client.post("/v1/chat/completions", json={**ask, "footnotes": True}).json()
    answer = plain["choices"][0]["message"]["content"]
    text = noted["choices"][0]["message"]["content"]
    assert "[^" not in answer
    assert text.startswith(answer)
    notes = text[len(answer):]
    assert notes.startswith(" [^1][^2]\n\n[^1]: nile.md (nile, score ")
    first, second = notes.split("\n\n", 1)[1].split("\n")
    assert first.endswith("): " + docs["nile"]) and second.startswith("[^2]: ")
    streamed = client.post("/v1/chat/completions", json={**ask, "footnotes": True, "stream": True}).text
    assert "[^1]: nile.md" in streamed


# ------------------------------------------------------------------ hostile input (issue 26)
def _json(body) -> bytes:
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as the escape \ud800


def _post_all(rag_url: str, auth: dict, requests: list[tuple[str, bytes]]) -> list[httpx.Response]:
    """Send every (path, raw body) at once, so the model batches them together."""
    async def send():
        async with httpx.AsyncClient(base_url=rag_url, headers=auth, timeout=300) as client:
            return await asyncio.gather(*(client.post(path, content=raw, headers={"Content-Type": "application/json"})
                                          for path, raw in requests))

    return asyncio.run(send())


POISON = [
    ("/v1/rag", {"question": "\ud800"}, ["body", "question"]),
    ("/v1/rag", {"question": "What is <MEM0> about?"}, ["body", "question"]),  # fails generation: one slot too many
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "tell me \udfff"}]},
     ["body", "messages", 0, "content"]),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "x\ud800"}, {"role": "user", "content": "q"}]},
     ["body", "messages", 0, "content"]),
]


def test_poison_requests_get_422_naming_the_field_and_good_ones_sent_with_them_succeed(rag_url, auth, docs):
    good = [("/v1/rag", _json({"question": text, "max_new_tokens": 2})) for text in list(docs.values()) * 5]
    for round_ in range(3):
        sent = [(g, None) for g in good]
        for i, (path, body, field) in enumerate(POISON):  # spread among the good ones, differently each round
            sent.insert((5 * i + 3 * round_) % len(sent), ((path, _json(body)), field))
        responses = _post_all(rag_url, auth, [request for request, _ in sent])
        assert [r.status_code for r, (_, field) in zip(responses, sent) if field is None] == [200] * len(good), round_
        for response, (_, field) in zip(responses, sent):
            if field is not None:
                assert response.status_code == 422, response.text
                assert response.json()["detail"][0]["loc"] == field


def test_a_request_that_fails_inside_a_model_batch_fails_alone(rag_url, docs):
    """Past the edge (straight to the deployments): a merged model call that raises is retried per
    request, so only the culprit gets an error, and it says the input was at fault."""
    from ray import serve

    from serve.app import _model_call
    from serve.deployments import ModelInputError
    from serve.schemas import RequestError

    retriever = serve.get_deployment_handle("Retriever", app_name="clara")
    generator = serve.get_deployment_handle("Generator", app_name="clara")
    questions = list(docs.values()) * 3
    retrieved = retriever.search.remote((docs["nile"], 2)).result()
    for _ in range(3):
        searches = [retriever.search.remote((q, 2)) for q in questions[:6]]
        bad_search = retriever.search.remote(("\ud800", 2))  # the tokenizer refuses it
        searches += [retriever.search.remote((q, 2)) for q in questions[6:]]
        answers = [generator.generate.remote((q, retrieved, 2)) for q in questions[:6]]
        bad_answer = generator.generate.remote(("<MEM0>?", retrieved, 2))  # one memory slot too many
        answers += [generator.generate.remote((q, retrieved, 2)) for q in questions[6:]]
        assert [s.result().ids[0] for s in searches] == [list(docs)[i % len(docs)] for i in range(len(questions))]
        assert all(isinstance(a.result().text, str) for a in answers)
        for bad, cause in ((bad_search, "TypeError"), (bad_answer, "memory slots")):
            with pytest.raises(ModelInputError, match=cause):
                bad.result()

        stream = generator.options(stream=True).stream.remote("<MEM0>?", retrieved, 2)
        with pytest.raises(ModelInputError, match="memory slots"):
            list(stream)
    # What the ingress makes of it: 422 naming the field the text came from.
    with pytest.raises(RequestError) as refused:
        asyncio.run(_model_call(lambda: retriever.search.remote(("\ud800", 2)), ["messages", 3, "content"]))
    assert refused.value.status == 422 and refused.value.detail[0]["loc"] == ["body", "messages", 3, "content"]


def _bodies():
    """(path, raw body) pairs a hostile or sloppy client might send: mostly the routes' own shapes
    filled with odd values (any Unicode, lone surrogates, the model's control tokens), some
    arbitrary JSON, some raw bytes."""
    from hypothesis import strategies as st

    odd = st.sampled_from(["\ud800", "\udfff", "\x00", "<MEM0>", "<SEP>", "<|im_end|>", "\ufeff", "\u202e", "🙂",
                           "\U0010ffff", "{{ x }}", "   ", "\r\n"])
    readable = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)  # any but surrogates
    text = st.lists(st.text(st.characters(exclude_categories=()), max_size=12) | odd, max_size=4).map("".join)
    scalar = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | text
    value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                         max_leaves=6)
    # Repeated branches weigh the choice towards requests that pass validation and reach the model.
    question = st.one_of(readable, readable, readable, text, value)
    number = st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(-3, 12), value)
    rag = st.fixed_dictionaries({"question": question}, optional={"top_k": number, "max_new_tokens": number,
                                                                  "extra": value})
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | text}, optional={"text": question})
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "user", "system", "assistant"]) | text},
                                    optional={"content": st.one_of(question, st.lists(part, max_size=3))})
    chat = st.fixed_dictionaries({"messages": st.lists(message, min_size=1, max_size=3) | value}, optional={
        "stream": st.booleans(), "max_tokens": number, "top_k": number, "model": st.one_of(readable, value)})
    asked = st.fixed_dictionaries({"messages": st.tuples(st.fixed_dictionaries({"role": st.just("user"),
                                                                                "content": question}))},
                                  optional={"stream": st.booleans(), "max_tokens": number})

    def posted(path: str, shape):
        return st.tuples(st.just(path), shape.map(lambda body: json.dumps(body).encode()))

    anything = st.tuples(st.sampled_from(["/v1/rag", "/v1/chat/completions"]),
                         value.map(lambda body: json.dumps(body).encode()) | st.binary(max_size=64))
    return st.one_of(posted("/v1/rag", rag), posted("/v1/chat/completions", chat | asked), anything)


def test_hundreds_of_generated_bodies_never_get_a_5xx(rag_url, auth):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    sent = []

    # Derandomised: CI sees the same ~350 bodies every run (run with --hypothesis-seed=random to explore).
    @settings(max_examples=12, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(_bodies(), min_size=25, max_size=35))
    def no_server_errors(requests):
        sent.extend(requests)
        for (path, raw), response in zip(requests, _post_all(rag_url, auth, requests)):
            assert response.status_code < 500, (path, raw, response.status_code, response.text)
            # A stream's status is sent before generation: its errors are events in the body.
            assert "server_error" not in response.text, (path, raw, response.text)

    no_server_errors()
    assert len(sent) >= 300


# ------------------------------------------------------------------ the chat page, in a real browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page(tmp_path):
    """A page of Debian's Chromium driven by Playwright (not Playwright's own browser builds)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no {CHROMIUM}: `make test-data` installs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra / requirements.lock")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 760})
        try:
            yield context.new_page()
        finally:
            context.close()


def test_chat_page_streams_the_answer_and_shows_the_citations(browser_page, rag_url, auth, docs, tmp_path):
    page = browser_page
    page.goto(rag_url + "/")
    # Every text the answer was given (one per piece appended), with the citations then on show.
    page.evaluate("""() => { window.seen = []; new MutationObserver((records) => records.forEach((r) =>
        r.addedNodes.forEach((n) => window.seen.push([n.data, document.querySelectorAll('.doc').length]))))
        .observe(document.getElementById('answer'), {childList: true}); }""")
    page.fill("#question", docs["paris"])
    page.fill("#top_k", "2")
    page.fill("#max_tokens", "6")
    page.click("#send")  # no token yet: the server refuses, the page asks for it
    page.wait_for_selector("#status.error")
    assert "token" in page.text_content("#status")

    page.fill("#token", auth["Authorization"].split()[1])
    page.click("#send")
    page.wait_for_function("['done', 'stopped at max tokens'].some(s => "
                           "document.getElementById('status').textContent.startsWith(s))", timeout=120_000)
    shots = os.environ.get("CLARA_RAY_SCREENSHOTS")  # set to docs/images to refresh the README's picture
    page.screenshot(path=os.path.join(shots or str(tmp_path), "chat.png"), full_page=True)
    assert "tokens" in page.text_content("#status")  # the usage the page asked for
    sources = page.locator(".doc .source").all_text_contents()
    assert sources[0] == "paris.md" and len(sources) == 2
    assert page.locator(".doc p").first.text_content() == docs["paris"]
    assert page.locator(".doc .score").first.text_content().startswith("score ")
    answer = page.text_content("#answer")
    plain = httpx.post(rag_url + "/v1/chat/completions", headers=auth, timeout=120, json={
        "messages": [{"role": "user", "content": docs["paris"]}], "max_tokens": 6, "top_k": 2}).json()
    assert answer.strip() == plain["choices"][0]["message"]["content"]
    seen = [text for text, _ in page.evaluate("window.seen") if text]
    assert len(set(seen)) >= 2 and seen[-1] == answer, seen  # the answer grew piece by piece
    assert all(n == 2 for text, n in page.evaluate("window.seen") if text)  # citations came first
