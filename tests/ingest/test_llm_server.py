"""The embedded OpenAI-compatible server, driven by the real openai client over HTTP."""
import base64
import io
import json

import pytest
from PIL import Image

from clara_ray.llm_server import ChatMessage, _pictures, _text_of


def test_a_picture_gets_a_note_of_its_size_not_an_invented_description():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buffer, format="JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    message = ChatMessage(role="user", content=[{"type": "text", "text": "Describe it."},
                                                {"type": "image_url", "image_url": {"url": url}}])
    assert _text_of(message.content) == "Describe it."
    assert _pictures([message]) == ["[an attached 64x32 JPEG picture]"]
    assert _pictures([ChatMessage(role="user", content="no picture here")]) == []


@pytest.mark.slow
def test_pipeline_without_api_serves_the_embedded_model(monkeypatch):
    """No endpoint anywhere: the pipeline starts the local server and points both models at it."""
    import openai

    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.pipeline import api_endpoint

    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "CLARA_TEXT_MODEL", "OPENAI_MODEL", "MODEL"):
        monkeypatch.delenv(name, raising=False)
    cfg = IngestConfig(api={"env_file": None, "embedded_backbone": "tiny-random"})
    with api_endpoint(cfg) as (api, run_cfg):
        assert api.text_model == api.vision_model == "tiny-random" and api.base_url.startswith("http://127.0.0.1:")
        assert run_cfg.synthesis.workers == 1 == run_cfg.caption.workers
        assert not run_cfg.caption.enabled  # text-only: no invented captions
        client = openai.OpenAI(base_url=api.base_url, api_key=api.api_key, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny-random"]
        reply = client.chat.completions.create(model="tiny-random", max_tokens=5,
                                               messages=[{"role": "user", "content": "Say hi"}])
        # A random-weight model writes valid JSON only if the server enforces response_format.
        schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 8}},
                  "required": ["answer"], "additionalProperties": False}
        structured = client.chat.completions.create(
            model="tiny-random", max_tokens=48, messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}})
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert 1 <= reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 3
    parsed = json.loads(structured.choices[0].message.content)
    assert list(parsed) == ["answer"] and isinstance(parsed["answer"], str) and len(parsed["answer"]) <= 8


def test_no_api_and_no_fallback_is_a_clear_error(monkeypatch):
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.pipeline import IngestError, api_endpoint

    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "CLARA_TEXT_MODEL", "OPENAI_MODEL", "MODEL"):
        monkeypatch.delenv(name, raising=False)
    cfg = IngestConfig(api={"env_file": None, "embedded_fallback": False})
    with pytest.raises(IngestError, match="OPENAI_BASE_URL"):
        with api_endpoint(cfg):
            pass


def test_chunking_without_api_starts_no_server_and_captions_nothing(monkeypatch):
    """`clara add` runs ingest only through chunking: the bundled text model would have nothing to do."""
    from clara_ray.ingest.config import IngestConfig
    from clara_ray.ingest.pipeline import api_endpoint

    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "CLARA_TEXT_MODEL", "OPENAI_MODEL", "MODEL"):
        monkeypatch.delenv(name, raising=False)
    with api_endpoint(IngestConfig(until="caption", api={"env_file": None})) as (api, run_cfg):
        assert api.base_url is None and not run_cfg.caption.enabled
