"""A small OpenAI-compatible chat server for a local Hugging Face model (default: bundled SmolLM2).

The ingest pipeline's embedded default when no API is configured: `make demo` works offline, on
127.0.0.1 only. SmolLM2-135M is text-only and small: a request with a picture is answered with
the picture's size and format and no description (rather than an invented scene). `response_format` (json_schema /
json_object) is enforced token by token (clara_ray.json_constraint), so its replies parse and
fit the schema, whatever their quality. Run standalone:
`python -m clara_ray.llm_server --backbone smollm2-135m --port 8089`.
"""
from __future__ import annotations

import base64
import contextlib
import io
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Optional, Union

from pydantic import BaseModel

from clara_ray.jobs.local_cluster import free_port

MAX_NEW_TOKENS = 512  # the demo's ceiling whatever a request asks: CPU generation is slow


class ChatMessage(BaseModel):
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    model: str = "local"
    messages: list[ChatMessage]
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None
    response_format: Optional[dict[str, Any]] = None


def _describe_image(url: str) -> str:
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        return f"[an attached {image.width}x{image.height} {image.format} picture]"
    except Exception:
        return "[an attached picture]"


def _text_of(content: Union[str, list[dict[str, Any]], None]) -> str:
    """The text parts of an OpenAI message content."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.get("text", "") for part in content if part.get("type") == "text")


def _pictures(messages: list[ChatMessage]) -> list[str]:
    """A size-and-format note for each image part of the messages."""
    return [_describe_image(part.get("image_url", {}).get("url", "")) for m in messages
            if isinstance(m.content, list) for part in m.content if part.get("type") == "image_url"]


def build_app(backbone: str):
    import torch
    from fastapi import FastAPI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clara_ray.backbones import resolve_backbone
    from clara_ray.json_constraint import prefix_allowed_tokens_fn, schema_of, tokenizer_data

    path = resolve_backbone(backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer_data(tokenizer)  # built now rather than inside the first structured request
    lock = threading.Lock()  # one generation at a time: the model is not re-entrant-safe on CPU
    app = FastAPI(title="clara-ray local LLM")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": backbone, "object": "model", "owned_by": "local"}]}

    @app.post("/v1/chat/completions")
    def chat(request: ChatRequest) -> dict:
        pictures = _pictures(request.messages)
        if pictures:
            # A text-only model asked about a picture only invents a scene, and that text would land
            # in the training data and the store; say plainly what is known instead.
            return _completion(backbone, " ".join(pictures) + " (not described: the embedded model is text-only)",
                               prompt_tokens=0, completion_tokens=0, limit=1)
        messages = [{"role": m.role, "content": _text_of(m.content)} for m in request.messages]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        limit = min(request.max_completion_tokens or request.max_tokens or MAX_NEW_TOKENS, MAX_NEW_TOKENS)
        constraint = {}
        schema = schema_of(request.response_format)
        if schema is not False:  # json_schema / json_object: only tokens that keep the reply valid JSON
            constraint["prefix_allowed_tokens_fn"] = prefix_allowed_tokens_fn(
                tokenizer, schema, inputs["input_ids"].shape[1])
        started = time.perf_counter()
        with lock, torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=limit, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **constraint)
        new = output[0, inputs["input_ids"].shape[1]:]
        print(f"local LLM: {inputs['input_ids'].shape[1]} prompt + {new.shape[0]} new tokens in "
              f"{time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
        return _completion(backbone, tokenizer.decode(new, skip_special_tokens=True),
                           int(inputs["input_ids"].shape[1]), int(new.shape[0]), limit)

    return app


def _completion(model: str, text: str, prompt_tokens: int, completion_tokens: int, limit: int) -> dict:
    return {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "length" if completion_tokens >= limit else "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the pipeline process dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG



@contextlib.contextmanager
def running_server(backbone: str = "smollm2-135m", startup_timeout_s: float = 300.0) -> Iterator[str]:
    """Serve `backbone` in a child process on 127.0.0.1; yields the base URL (…/v1)."""
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "clara_ray.llm_server", "--backbone", backbone,
                             "--port", str(port)], preexec_fn=_die_with_parent)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"local LLM server for {backbone} exited with code {proc.returncode}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"local LLM server for {backbone} did not start in {startup_timeout_s:.0f} s")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(backbone: str = "smollm2-135m", port: int = 8089) -> None:
    import uvicorn

    uvicorn.run(build_app(backbone), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    import typer

    typer.run(main)
