"""Request/response models of the HTTP API, and body parsing with the configured limits.

Limits come from `ServeSettings.limits` through pydantic's validation context, so one schema
serves any configuration and every refusal names its field.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.json_schema import models_json_schema

from clara_ray.unicode import encoding_problem, printable
from serve.settings import Limits

T = TypeVar("T", bound=BaseModel)


class RequestError(Exception):
    """A client error: HTTP status + FastAPI-style `detail`."""

    def __init__(self, status: int, detail: Any):
        super().__init__(str(detail))
        self.status = status
        self.detail = detail

    def openai_error(self) -> dict:
        if isinstance(self.detail, list):  # per-field validation errors
            fields = [".".join(str(p) for p in err["loc"][1:]) for err in self.detail]
            message = "; ".join(f"{f}: {err['msg']}" for f, err in zip(fields, self.detail))
            return {"message": message, "type": "invalid_request_error", "param": fields[0], "code": None}
        kind = "authentication_error" if self.status == 401 else "invalid_request_error"
        return {"message": str(self.detail), "type": kind, "param": None, "code": None}


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every refusal (400, 401, 413, 422): `detail` as FastAPI clients read it (a message,
    or one entry per field), `error` as OpenAI clients do."""
    detail: str | list[FieldError]
    error: OpenAIError


def error_responses(*statuses: int) -> dict:
    """`responses=` of a route that refuses with these statuses, so /openapi.json declares them."""
    return {status: {"model": ErrorResponse} for status in statuses}


def _limits(info: ValidationInfo) -> Limits:
    return (info.context or {}).get("limits") or Limits()


def _check_text(text: str, info: ValidationInfo) -> str:
    """Text the model can read: encodable, and free of its control tokens (a memory-token name in
    a question would give the prompt more memory slots than documents, failing its generation)."""
    problem = encoding_problem(text)
    if problem:
        raise ValueError(f"text {problem}")
    control = next((t for t in (info.context or {}).get("control_tokens", ()) if t in text), None)
    if control:
        raise ValueError(f"text contains {control!r}, a control token of the model")
    return text


def _check_question(question: str, info: ValidationInfo) -> str:
    limit = _limits(info).max_question_chars
    _check_text(question, info)
    if not question.strip():
        raise ValueError("question is empty")
    if len(question) > limit:
        raise ValueError(f"question has {len(question)} characters; the limit is {limit}")
    return question


def _check_top_k(top_k: int | None, info: ValidationInfo) -> int | None:
    limit = _limits(info).max_top_k
    if top_k is not None and not 1 <= top_k <= limit:
        raise ValueError(f"top_k must be between 1 and {limit}, got {top_k}")
    return top_k


def _check_new_tokens(value: int | None, info: ValidationInfo) -> int | None:
    limit = _limits(info).max_new_tokens
    if value is not None and not 1 <= value <= limit:
        raise ValueError(f"must be between 1 and {limit}, got {value}")
    return value


# ---------------------------------------------------------------------------------- /v1/rag
class RagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    top_k: int | None = None
    max_new_tokens: int | None = None

    _question = field_validator("question")(_check_question)
    _top_k = field_validator("top_k")(_check_top_k)
    _new_tokens = field_validator("max_new_tokens")(_check_new_tokens)


class Document(BaseModel):
    id: str
    score: float
    text: str
    source: str


class Timings(BaseModel):
    """Seconds spent per step, measured inside the ingress replica."""
    retrieve_s: float
    generate_s: float
    total_s: float


class RagResponse(BaseModel):
    answer: str
    documents: list[Document]
    store_version: int  # the store version the documents come from
    timings: Timings


# ---------------------------------------------------------------------- OpenAI-compatible
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, content: str | list[ContentPart] | None, info: ValidationInfo):
        # Every message, not only the question: whatever the model may ever read must be readable.
        if isinstance(content, list):
            for i, part in enumerate(content):
                try:
                    _check_text(part.text or "", info)
                except ValueError as exc:
                    raise ValueError(f"part {i}: {exc}") from None
        elif content is not None:
            _check_text(content, info)
        return content

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False  # a last chunk, with no choices, carries the request's usage


class ChatRequest(BaseModel):
    # The openai client sends many optional fields (temperature, n, ...): accept and ignore them;
    # decoding here is greedy.
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream_options: StreamOptions | None = None
    top_k: int | None = None  # extension: how many documents to retrieve
    # Extension: append the sources to the answer as Markdown footnotes, for clients that show
    # only the message text (Open WebUI, LibreChat); None: the server's `footnotes` setting.
    footnotes: bool | None = None

    _top_k = field_validator("top_k")(_check_top_k)
    _max_tokens = field_validator("max_tokens", "max_completion_tokens")(_check_new_tokens)

    @field_validator("messages")
    @classmethod
    def _messages(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        limit = _limits(info).max_messages
        if len(messages) > limit:
            raise ValueError(f"{len(messages)} messages; the limit is {limit}")
        users = [m for m in messages if m.role == "user"]
        if not users:
            raise ValueError("no user message: the last user message is the question")
        _check_question(users[-1].text(), info)
        return messages

    def _question_index(self) -> int:
        return max(i for i, m in enumerate(self.messages) if m.role == "user")

    def question(self) -> str:
        return self.messages[self._question_index()].text()

    def question_field(self) -> list:
        """Where the question sits in the body, for errors about it."""
        return ["messages", self._question_index(), "content"]

    def new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def wants_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def footnotes(documents: Sequence[Document]) -> str:
    """The sources as Markdown footnotes, to append to an answer: references, then definitions."""
    if not documents:
        return ""
    marks = "".join(f"[^{i}]" for i in range(1, len(documents) + 1))
    notes = "\n".join(f"[^{i}]: {_one_line(d.source)} ({_one_line(d.id)}, score {d.score:.3f}): {_one_line(d.text)}"
                      for i, d in enumerate(documents, 1))
    return f" {marks}\n\n{notes}"


def _one_line(text: str, limit: int = 200) -> str:
    """A footnote's text on one line (a newline would end the footnote), shortened."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def chat_completion(cid: str, model: str, answer: str, documents: list[Document], finish: str,
                    usage: dict, store_version: int) -> dict:
    """A `chat.completion` object; the retrieved documents ride along as `citations`, with the
    `store_version` they come from."""
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": answer}}],
        "usage": usage,
        "citations": [d.model_dump() for d in documents],
        "store_version": store_version,
    }


def chat_chunk(cid: str, model: str, delta: dict | None, finish: str | None = None,
               documents: list[Document] | None = None, usage: dict | None = None,
               store_version: int | None = None) -> dict:
    """A `chat.completion.chunk`; `delta` None: the usage chunk, which has no choices."""
    chunk = {
        "id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if documents is not None:
        chunk["citations"] = [d.model_dump() for d in documents]
    if store_version is not None:
        chunk["store_version"] = store_version
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def model_list(name: str) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "clara-ray"}]}


def openapi_body(schema: type[BaseModel]) -> dict:
    """`openapi_extra` of a route that parses its body itself (`parse_body`): the body is
    documented as `schema`, whose JSON schema `request_schemas` adds to the components."""
    ref = {"$ref": f"#/components/schemas/{schema.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def request_schemas(schemas: Sequence[type[BaseModel]]) -> dict[str, dict]:
    """The JSON schemas of `schemas` and the models they nest, keyed by name, referencing each
    other as OpenAPI components."""
    _, top = models_json_schema([(s, "validation") for s in schemas], ref_template="#/components/schemas/{model}")
    return top["$defs"]


# ---------------------------------------------------------------------------------- parsing
def parse_body(raw: bytes, schema: type[T], limits: Limits, control_tokens: Sequence[str] = ()) -> T:
    """Bytes -> validated request; 413 over the size limit, 400 for bad JSON, 422 per field.
    `control_tokens`: strings the model's tokenizer reserves, refused in any text field."""
    if len(raw) > limits.max_body_bytes:
        raise RequestError(413, f"body has {len(raw)} bytes; the limit is {limits.max_body_bytes}")
    try:
        data = json.loads(raw)
    # ValueError covers undecodable bytes and integers past Python's digit limit; RecursionError,
    # arrays nested thousands deep (64 KiB of "[" is enough).
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"body is not valid JSON: {type(exc).__name__}: {exc}") from None
    try:
        return schema.model_validate(data, context={"limits": limits, "control_tokens": control_tokens})
    except ValidationError as exc:
        raise RequestError(422, [field_error(err["loc"], err["msg"], err["type"])
                                 for err in exc.errors(include_url=False, include_input=False)]) from None


def field_error(loc: Sequence, msg: str, kind: str) -> dict:
    """One FastAPI-style error entry; strings made printable, as a field name of the client's
    (an unknown key) may hold a lone surrogate that no JSON response could encode."""
    return {"loc": ["body", *(printable(p) if isinstance(p, str) else p for p in loc)],
            "msg": printable(msg), "type": kind}
