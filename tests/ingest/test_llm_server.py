"""The embedded OpenAI-compatible server, driven by the real openai client over HTTP."""
import base64
import io

import pytest
from PIL import Image

from clara_ray.llm_server import _text_of, running_server


def test_image_parts_become_a_note_for_the_text_model():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 32)).save(buffer, format="JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    text = _text_of([{"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": url}}])
    assert text == "Describe it.\n[an attached 64x32 JPEG picture]"


@pytest.mark.slow
def test_chat_completions_round_trip_with_tiny_backbone():
    import openai

    with running_server("tiny-random") as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["tiny-random"]
        reply = client.chat.completions.create(model="tiny-random", max_tokens=5,
                                               messages=[{"role": "user", "content": "Say hi"}])
    assert reply.choices[0].message.role == "assistant"
    assert isinstance(reply.choices[0].message.content, str)
    assert 1 <= reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 3
