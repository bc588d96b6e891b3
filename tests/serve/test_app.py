"""HTTP behaviour of the real Serve application (tiny model, real store, loopback)."""
from __future__ import annotations

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
