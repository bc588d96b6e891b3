"""Request parsing: limits from the settings, errors naming the field, JSON problems as 400."""
from __future__ import annotations

import json

import pytest

from serve.schemas import ChatRequest, RagRequest, RequestError, parse_body
from serve.settings import Limits

LIMITS = Limits(max_question_chars=10, max_top_k=3, max_new_tokens=5, max_messages=2)
CONTROL = ["<|im_end|>", "<MEM0>", "<ENC>"]  # what the Generator reports for its tokenizer


def _error(raw: bytes, schema, limits: Limits = LIMITS) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_body(raw, schema, limits, CONTROL)
    return info.value


def _refusal(raw: bytes, schema) -> RequestError:
    return _error(raw, schema, Limits())


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


@pytest.mark.parametrize("text, words", [
    ("why\ud800", "lone surrogate U+D800 at character 3"),
    ("\udfff", "lone surrogate U+DFFF"),
    ("what is <MEM0>?", "'<MEM0>', a control token"),
])
def test_text_the_model_cannot_read_is_refused_naming_the_field(text, words):
    body = json.dumps({"question": text}).encode()  # json.dumps escapes a surrogate as \ud800
    error = _refusal(body, RagRequest)
    assert error.status == 422 and error.detail[0]["loc"] == ["body", "question"]
    assert words in error.detail[0]["msg"]
    chat = {"messages": [{"role": "system", "content": "fine"}, {"role": "user", "content": "fine"},
                         {"role": "assistant", "content": [{"type": "text", "text": "ok"},
                                                           {"type": "text", "text": text}]},
                         {"role": "user", "content": "the question"}]}
    error = _refusal(json.dumps(chat).encode(), ChatRequest)  # any message, not only the question
    assert error.detail[0]["loc"] == ["body", "messages", 2, "content"] and "part 1" in error.detail[0]["msg"]


@pytest.mark.parametrize("text", ["nul \x00 byte", "\x1b[31mred", "\ufffe\uffff", "\U0010ffff \U000effff", "\u202eevil",
                                  "e" + "\u0301" * 200, "🙂" * 100, "<ENC without its bracket"])
def test_odd_but_encodable_text_is_accepted(text):
    assert parse_body(json.dumps({"question": text}).encode(), RagRequest, Limits(), CONTROL).question == text


@pytest.mark.parametrize("raw", [b"[" * 30000, b'{"question": "q", "top_k": ' + b"9" * 5000 + b"}"])
def test_json_too_deep_or_numbers_too_long_are_400(raw):
    assert _error(raw, RagRequest).status == 400


def test_an_unknown_key_that_is_not_unicode_gets_a_printable_error():
    error = _error(b'{"question": "q", "\\ud800x": 1}', RagRequest)
    assert error.status == 422
    json.dumps(error.detail, ensure_ascii=False).encode("utf-8")  # what the error response does
