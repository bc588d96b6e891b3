"""The official openai client, unchanged, against the Serve app's OpenAI-compatible routes."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def openai_client(rag_url, auth):
    from openai import OpenAI

    return OpenAI(base_url=rag_url + "/v1", api_key=auth["Authorization"].split()[1], timeout=120, max_retries=0)


def test_models_lists_the_served_model(openai_client, serve_settings):
    assert [m.id for m in openai_client.models.list()] == [serve_settings.model_name]


def test_chat_completion_answers_with_citations(openai_client, docs):
    completion = openai_client.chat.completions.create(
        model="clara", max_tokens=3,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "unrelated earlier turn"},
                  {"role": "assistant", "content": "ok"}, {"role": "user", "content": docs["tokyo"]}],
    )
    assert completion.choices[0].message.role == "assistant"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 1 <= usage.completion_tokens <= 3
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    citations = completion.model_extra["citations"]
    assert citations[0]["id"] == "tokyo" and citations[0]["source"] == "tokyo.md"


def test_streaming_matches_the_plain_answer(openai_client, docs):
    messages = [{"role": "user", "content": docs["paris"]}]
    plain = openai_client.chat.completions.create(model="clara", messages=messages, max_tokens=6)
    chunks = list(openai_client.chat.completions.create(model="clara", messages=messages, max_tokens=6, stream=True))
    assert chunks[0].model_extra["citations"][0]["id"] == "paris"
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].usage is None  # only when asked for
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed.strip() == plain.choices[0].message.content


def test_finish_reason_says_whether_the_budget_cut_the_answer(openai_client, docs):
    """The served tiny model writes on without ending (tests/serve/conftest.py): one token is a cut answer."""
    messages = [{"role": "user", "content": docs["oxygen"]}]
    cut = openai_client.chat.completions.create(model="clara", messages=messages, max_tokens=1)
    assert (cut.choices[0].finish_reason, cut.usage.completion_tokens) == ("length", 1)
    chunks = list(openai_client.chat.completions.create(model="clara", messages=messages, max_tokens=1, stream=True,
                                                        stream_options={"include_usage": True}))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == cut.usage.model_dump()


def test_bad_chat_requests_are_client_errors(openai_client):
    from openai import AuthenticationError, UnprocessableEntityError

    with pytest.raises(UnprocessableEntityError, match="max_tokens"):
        openai_client.chat.completions.create(model="clara", messages=[{"role": "user", "content": "q"}],
                                              max_tokens=1000)
    with pytest.raises(UnprocessableEntityError, match="no user message"):
        openai_client.chat.completions.create(model="clara", messages=[{"role": "system", "content": "q"}])
    with pytest.raises(AuthenticationError):
        openai_client.with_options(api_key="wrong").models.list()
    assert openai_client.models.list().data  # still serving
