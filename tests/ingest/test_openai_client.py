import time

import pytest
from pydantic import BaseModel

from clara_ray.ingest.config import ApiConfig
from clara_ray.ingest.openai_client import ApiCallError, ChatClient, parse_json_object
from ingest_helpers import api_overrides


class Echo(BaseModel):
    echo: str


def _client(server, **extra) -> ChatClient:
    api = ApiConfig(**api_overrides(server, **extra))
    return ChatClient(api, api.text_model)


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": f"TASK: echo\nPASSAGE:\n{text}"}]


def test_transient_faults_are_retried_until_success(scripted_api):
    server = scripted_api(faults_first=("429", "500", "timeout"), hang_s=1.5)
    reply = _client(server, timeout_s=0.5).complete_json(_ask("hello there"), Echo)
    assert reply.echo == "hello there"
    assert server.requests["echo"] == 4 and server.faults == {"429": 1, "500": 1, "timeout": 1}


def test_persistent_server_errors_give_up_after_max_attempts(scripted_api):
    server = scripted_api()
    with pytest.raises(ApiCallError, match="HTTP 500 after 3 attempts") as info:
        _client(server, max_attempts=3).complete(_ask("POISON-500"))
    assert info.value.kind == "api_error" and server.requests["echo"] == 3


def test_timeouts_are_reported_as_timeouts(scripted_api):
    server = scripted_api(faults_first=("timeout",) * 2, hang_s=1.5)
    with pytest.raises(ApiCallError) as info:
        _client(server, max_attempts=2, timeout_s=0.3).complete(_ask("slow"))
    assert info.value.kind == "timeout"


def test_broken_json_is_requested_again_and_then_reported(scripted_api):
    server = scripted_api(faults_first=("broken_json",))
    assert _client(server).complete_json(_ask("fixed on retry"), Echo).echo == "fixed on retry"
    assert server.requests["echo"] == 2
    # the re-ask shows the model its bad reply and what was wrong with it
    first, again = server.conversations
    assert again[:len(first)] == first and again[-2]["role"] == "assistant"
    assert again[-1]["role"] == "user" and "rejected" in again[-1]["content"]
    server = scripted_api(faults_first=("broken_json",) * 3)
    with pytest.raises(ApiCallError, match="no valid Echo after 3 attempts") as info:
        _client(server, json_attempts=3).complete_json(_ask("always broken"), Echo)
    assert info.value.kind == "invalid_json"


def test_structured_output_is_requested_with_the_schema(scripted_api):
    server = scripted_api()
    _client(server, structured_output="json_schema").complete_json(_ask("x"), Echo)
    fmt = server.response_formats[-1]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"]["required"] == ["echo"]


def test_request_rate_is_limited(scripted_api):
    server = scripted_api()
    client = _client(server, requests_per_second=10.0)
    start = time.monotonic()
    for i in range(6):
        client.complete(_ask(str(i)))
    assert time.monotonic() - start >= 0.5  # 6 starts spaced 0.1 s apart


@pytest.mark.parametrize("text, expected", [
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('Sure! Here it is: {"a": [1, 2]} Hope that helps.', {"a": [1, 2]}),
    ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
    ("{a: 'x'}", {"a": "x"}),
])
def test_cosmetic_json_damage_is_repaired(text, expected):
    assert parse_json_object(text) == expected


@pytest.mark.parametrize("text", ['{"a": ', "no json here", "[1, 2]"])
def test_unrepairable_json_raises(text):
    with pytest.raises(ValueError):
        parse_json_object(text)
