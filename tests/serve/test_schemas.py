"""Request parsing: limits from the settings, errors naming the field, JSON problems as 400."""
from __future__ import annotations

import json

import pytest

from serve.schemas import ChatRequest, RagRequest, RequestError, parse_body
from serve.settings import Limits

LIMITS = Limits(max_question_chars=10, max_top_k=3, max_new_tokens=5, max_messages=2)


def _error(raw: bytes, schema) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_body(raw, schema, LIMITS)
    return info.value


def test_valid_request_parses():
    body = parse_body(b'{"question": "why?", "top_k": 3, "max_new_tokens": 5}', RagRequest, LIMITS)
    assert (body.question, body.top_k, body.max_new_tokens) == ("why?", 3, 5)


@pytest.mark.parametrize("body, field, words", [
    ({"question": "x" * 11}, "question", "limit is 10"),
    ({"question": "q", "top_k": 4}, "top_k", "between 1 and 3"),
    ({"question": "q", "max_new_tokens": 6}, "max_new_tokens", "between 1 and 5"),
])
def test_limits_name_field_and_reason(body, field, words):
    error = _error(json.dumps(body).encode(), RagRequest)
    assert error.status == 422
    assert error.detail[0]["loc"] == ["body", field] and words in error.detail[0]["msg"]
    assert error.openai_error()["param"] == field


def test_limits_follow_the_settings():
    loose = Limits(max_top_k=50)
    assert parse_body(b'{"question": "q", "top_k": 40}', RagRequest, loose).top_k == 40


@pytest.mark.parametrize("raw", [b"{", b"\xff", b"nul"])
def test_bad_json_is_400(raw):
    assert _error(raw, RagRequest).status == 400


def test_chat_question_is_the_last_user_message():
    body = parse_body(json.dumps({"messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "a"}]}).encode(), ChatRequest,
        Limits(max_question_chars=10))
    assert body.question() == "first"
    parts = parse_body(json.dumps({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}).encode(),
        ChatRequest, LIMITS)
    assert parts.question() == "what"


def test_chat_limits():
    too_many = {"messages": [{"role": "user", "content": "q"}] * 3}
    assert _error(json.dumps(too_many).encode(), ChatRequest).detail[0]["loc"] == ["body", "messages"]
    long_q = {"messages": [{"role": "user", "content": "x" * 11}]}
    assert "limit is 10" in _error(json.dumps(long_q).encode(), ChatRequest).detail[0]["msg"]
    tokens = {"messages": [{"role": "user", "content": "q"}], "max_completion_tokens": 6}
    assert _error(json.dumps(tokens).encode(), ChatRequest).detail[0]["loc"] == ["body", "max_completion_tokens"]
