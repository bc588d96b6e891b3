"""Hostile input against the real Serve application (tiny model, loopback): requests generated from
its own /openapi.json by schemathesis, and the security properties of the edge."""
from __future__ import annotations

import asyncio

import httpx
import pytest

# Generated requests per run: valid ones (they reach the model) and invalid ones (wrong types,
# out-of-range and huge numbers, missing and unknown fields, empty and long strings, bodies that are
# not JSON or not UTF-8). They are sent BATCH at a time, so the model batches them.
PER_MODE, BATCH = {"positive": 350, "negative": 700}, 100


def _generate(schema, mode, count: int) -> list:
    """`count` cases of the schema's operations, drawn by Hypothesis; derandomised, so CI sends the
    same requests every run (--hypothesis-seed=random explores others)."""
    from hypothesis import HealthCheck, given, settings

    cases = []

    @settings(max_examples=count, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(schema.as_strategy(generation_mode=mode))
    def collect(case):
        cases.append(case)

    collect()
    return cases


def _send_all(url: str, auth: dict, cases: list) -> list[httpx.Response]:
    """Send the generated cases concurrently, each as schemathesis would (its method, path, query,
    headers, body), with the bearer token added."""
    async def send():
        async with httpx.AsyncClient(timeout=300) as client:
            requests = []
            for case in cases:
                kwargs = case.as_transport_kwargs(base_url=url, headers=auth)
                requests.append(client.request(kwargs["method"], kwargs["url"], headers=kwargs.get("headers"),
                                               params=kwargs.get("params"), json=kwargs.get("json"),
                                               content=kwargs.get("data")))
            return await asyncio.gather(*requests)

    return asyncio.run(send())


def test_a_thousand_requests_generated_from_the_openapi_schema_get_no_5xx_and_match_it(rag_url, auth, docs):
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    schema = schemathesis.openapi.from_url(f"{rag_url}/openapi.json")
    cases = [case for mode in GenerationMode for case in _generate(schema, mode, PER_MODE[mode.value])]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    failures, statuses = [], {}
    for start in range(0, len(cases), BATCH):
        batch = cases[start:start + BATCH]
        for case, response in zip(batch, _send_all(rag_url, auth, batch)):
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # noqa: BLE001 - every failure is collected, then reported together
                failures.append(f"{case.method} {case.path} {case.body!r:.200} -> {response.status_code}: {exc}")
            # A stream's status line goes out before generation: its errors are events in the body.
            if "server_error" in response.text:
                failures.append(f"{case.method} {case.path} {case.body!r:.200} -> error event: {response.text:.300}")
    print(f"{len(cases)} generated requests, statuses {statuses}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:10])
    # Valid for the schema is not always valid for the app (an empty question, no user message): still,
    # some reach the model.
    assert len(cases) >= 1000 and statuses.get(200, 0) >= 20
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert {(case.method.upper(), case.path) for case in cases} == operations
    # Still serving afterwards.
    answer = httpx.post(f"{rag_url}/v1/rag", headers=auth, json={"question": docs["paris"]}, timeout=120)
    assert answer.status_code == 200 and answer.json()["documents"][0]["id"] == "paris"


# ------------------------------------------------------------------------------------ security
# Routes open without a token, by design: the liveness probe, the chat page (static, no data: it
# asks for the token and sends it itself) and the API's own documentation.
OPEN_ROUTES = {"/healthz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def _routes(routes):
    """Every route of the app, the class-based ones Serve's ingress includes as a router too."""
    for route in routes:
        if hasattr(route, "original_router"):
            yield from _routes(route.original_router.routes)
        else:
            yield route


def test_every_route_but_the_open_ones_needs_the_token_streaming_included(rag_url, docs):
    from serve.app import api

    good = {"/v1/rag": {"question": docs["nile"]},
            "/v1/chat/completions": {"messages": [{"role": "user", "content": docs["nile"]}], "stream": True}}
    guarded = [r for r in _routes(api.routes) if r.path not in OPEN_ROUTES]
    assert {r.path for r in guarded} == {"/v1/models", "/v1/rag", "/v1/chat/completions", "/v1/admin/reload"}, "a new route: guard it"
    for route in guarded:
        for method in route.methods - {"HEAD"}:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic test-token"}):
                response = httpx.request(method, rag_url + route.path, json=good.get(route.path), headers=headers,
                                         timeout=60)
                assert response.status_code == 401, (method, route.path, headers, response.text)
                assert "data:" not in response.text  # no stream started
    for path in OPEN_ROUTES - {"/docs/oauth2-redirect"}:
        assert httpx.get(rag_url + path, timeout=60).status_code == 200, path


def test_the_token_is_compared_in_constant_time():
    import inspect

    from serve.app import RagIngress

    source = inspect.getsource(RagIngress.func_or_class._authorize)
    assert "hmac.compare_digest(" in source and "== self.token" not in source


def test_a_path_in_a_request_body_never_makes_the_server_read_a_file(rag_url, auth, tmp_path):
    secret = "canary-7c1e0f-not-for-clients"
    canary = tmp_path / "canary.txt"
    canary.write_text(secret)
    paths = [str(canary), f"file://{canary}", f"{canary.parent}/../{canary.parent.name}/canary.txt", "/etc/passwd"]
    bodies = []
    for path in paths:
        bodies += [
            ("/v1/rag", {"question": path}),
            ("/v1/rag", {"question": "q", "checkpoint": path, "store": path}),  # settings are not request fields
            ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is in it?"}, {"type": "image_url", "image_url": {"url": path}},
                {"type": "file", "file": {"path": path}}]}]}),
            ("/v1/chat/completions", {"model": path, "messages": [{"role": "user", "content": path}]}),
        ]
    for route, body in bodies:
        response = httpx.post(rag_url + route, headers=auth, json=body, timeout=120)
        assert response.status_code in (200, 422), (route, body, response.text)
        assert secret not in response.text and "root:x:0:0" not in response.text, (route, body)


def test_request_logs_never_contain_the_token(rag_url, auth, docs):
    import ray

    token = auth["Authorization"].split()[1]
    wrong = "wrong-token-3f9a2b"
    httpx.post(rag_url + "/v1/rag", headers=auth, json={"question": docs["tokyo"]}, timeout=120)
    httpx.post(rag_url + "/v1/rag", headers={"Authorization": f"Bearer {wrong}"}, json={"question": "q"}, timeout=60)
    httpx.post(rag_url + "/v1/chat/completions", headers=auth, timeout=120,
               json={"messages": [{"role": "user", "content": docs["tokyo"]}], "stream": True})
    logs = ray._private.worker._global_node.get_logs_dir_path()
    from pathlib import Path

    files = [p for p in Path(logs).rglob("*") if p.is_file() and ("serve" in p.parts or "worker" in p.name)]
    assert any("serve" in p.parts for p in files), f"no Serve logs under {logs}"
    leaked = [str(p) for p in files if token.encode() in p.read_bytes() or wrong.encode() in p.read_bytes()]
    assert not leaked
