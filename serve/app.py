"""FastAPI ingress of the RAG application and the application builder.

`serve deploy serve/config.yaml` imports `serve.app:build_app` with the YAML `args` (validated as
`ServeSettings`); `clara serve` calls `bind_app` with the same per-deployment options.
"""

import hmac
import json
import logging
import time
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from tenacity import AsyncRetrying, before_sleep_log, retry_if_exception_type, stop_after_attempt

from serve.deployments import Generator, ModelInputError, Retriever
from serve.loading import check_inputs
from serve.request_log import note, observe_requests
from serve.retrieved import Retrieved
from serve.schemas import (ChatRequest, Document, RagRequest, RagResponse, RequestError, Timings, chat_chunk,
                           chat_completion, completion_id, error_responses, field_error, footnotes, model_list,
                           openapi_body, parse_body, request_schemas)
from serve.settings import ServeSettings
from serve.usage import Answer

log = logging.getLogger("ray.serve")
# A replica opens and verifies (checksums) a new version within its reload call: minutes for a large store.
RELOAD_TIMEOUT_S = 600.0

api = FastAPI(title="clara-ray RAG", description="Answers from a precompressed CLaRa store. The chat page is at `/`.")


def _openapi() -> dict:
    """FastAPI's schema plus the request bodies the routes parse themselves: they check the
    bearer token and the size limit before reading the body, which a body parameter would not."""
    if api.openapi_schema is None:
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            request_schemas([RagRequest, ChatRequest]))
        api.openapi_schema = schema
    return api.openapi_schema


api.openapi = _openapi
api.middleware("http")(observe_requests)
CHAT_PAGE = resources.files("serve").joinpath("static/index.html")
# What a route that reads a body refuses with: bad JSON, no/wrong token, too large, invalid fields.
BODY_ERRORS = error_responses(400, 401, 413, 422)
# A chat completion with `stream: true` answers as server-sent events. Before OpenAPI 3.2's
# `itemSchema`, a stream's `schema` describes one event (its `data` a JSON chunk, or `[DONE]`).
STREAMED = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}}}}}}}


@api.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    # `detail` as FastAPI clients expect; `error` as OpenAI clients expect (they show its message).
    return JSONResponse({"detail": exc.detail, "error": exc.openai_error()}, status_code=exc.status, headers=headers)


def _documents(retrieved: Retrieved) -> list[Document]:
    return [Document(id=i, score=s, text=t, source=src)
            for i, s, t, src in zip(retrieved.ids, retrieved.scores, retrieved.texts, retrieved.sources)]


def _sse(payload: Any) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _input_error(exc: ModelInputError, field: list) -> RequestError:
    """422 naming the request field whose text the model could not read."""
    return RequestError(422, [field_error(field, str(exc), "model_input")])


def _resend_on_replica_loss(retries: int) -> AsyncRetrying:
    """Attempts of a Retriever/Generator call: one more per `retries` when the replica serving it
    dies (its process or its node); Serve routes the repeat to a live replica. The calls only
    read, so a repeat cannot do anything twice."""
    return AsyncRetrying(retry=retry_if_exception_type(RayActorError), stop=stop_after_attempt(1 + retries),
                         before_sleep=before_sleep_log(log, logging.WARNING), reraise=True)


async def _model_call(call: Callable[[], Awaitable], field: list, replica_loss_retries: int = 0):
    """A Retriever/Generator call; a failure caused by this request's input is a 422 on `field`
    (server faults propagate: 500)."""
    try:
        async for attempt in _resend_on_replica_loss(replica_loss_retries):
            with attempt:
                return await call()
    except ModelInputError as exc:  # Ray re-raises the replica's error as a subclass of its type
        raise _input_error(exc, field) from None


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=256)
@serve.ingress(api)
class RagIngress:
    def __init__(self, settings: ServeSettings, retriever: DeploymentHandle, generator: DeploymentHandle):
        self.settings = settings
        self.token = settings.resolved_token()
        self.retriever = retriever
        self.generator = generator
        self.control_tokens: list[str] | None = None  # the model's reserved strings, asked for once

    # ---------------------------------------------------------------- request checks
    def _authorize(self, request: Request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise RequestError(401, "missing or wrong bearer token")

    async def _read_body(self, request: Request) -> bytes:
        """The body, refusing (413) past the limit without reading more than limit + one chunk."""
        limit = self.settings.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestError(413, f"body has {declared} bytes; the limit is {limit}")
        size, chunks = 0, []
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, request: Request, schema):
        self._authorize(request)
        raw = await self._read_body(request)
        if self.control_tokens is None:
            self.control_tokens = await _model_call(self.generator.control_tokens.remote, [],
                                                    self.settings.replica_loss_retries)
        return parse_body(raw, schema, self.settings.limits, self.control_tokens)

    # ---------------------------------------------------------------- pipeline
    async def _retrieve(self, request: Request, question: str, top_k: int | None, field: list) -> Retrieved:
        top_k, started = top_k or self.settings.default_top_k, time.perf_counter()
        retrieved = await _model_call(lambda: self.retriever.search.remote((question, top_k)), field,
                                      self.settings.replica_loss_retries)
        note(request, top_k=top_k, store_version=retrieved.store_version, retrieve_s=time.perf_counter() - started,
             **({"question": question} if self.settings.log_questions else {}))
        return retrieved

    async def _generate(self, request: Request, question: str, retrieved: Retrieved, budget: int,
                        field: list) -> Answer:
        started = time.perf_counter()
        answer = await _model_call(lambda: self.generator.generate.remote((question, retrieved, budget)), field,
                                   self.settings.replica_loss_retries)
        note(request, generate_s=time.perf_counter() - started, completion_tokens=answer.completion_tokens)
        return answer

    async def _stream(self, ask: tuple[str, Retrieved, int]) -> AsyncIterator:
        """The Generator's stream. Sent again if its replica dies before the first piece; after it,
        the client holds part of an answer, so the loss is reported instead."""
        async for attempt in _resend_on_replica_loss(self.settings.replica_loss_retries):
            with attempt:
                stream = self.generator.options(stream=True).stream.remote(*ask)
                first = await anext(stream)
        yield first
        async for piece in stream:
            yield piece

    def _budget(self, max_new_tokens: int | None) -> int:
        return max_new_tokens or self.settings.default_max_new_tokens

    # ---------------------------------------------------------------- routes
    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.settings.model_name, "backend": self.settings.backend,
                "reader": self.settings.reader}

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self) -> HTMLResponse:
        # Open like /healthz: the page holds no data, it asks for the token and sends it itself.
        return HTMLResponse(CHAT_PAGE.read_text(encoding="utf-8"))

    @api.get("/v1/models", responses=error_responses(401))
    async def models(self, request: Request) -> dict:
        self._authorize(request)
        return model_list(self.settings.model_name)

    @api.post("/v1/admin/reload")
    async def reload(self, request: Request) -> dict:
        """Every Retriever replica checks for a newly published store version now, as its watcher does
        every `store_watch_s`; the answer lists what each one serves after its check."""
        self._authorize(request)
        return {"replicas": await self.retriever.broadcast("reload").results_async(timeout_s=RELOAD_TIMEOUT_S)}

    @api.post("/v1/rag", response_model=RagResponse, openapi_extra=openapi_body(RagRequest), responses=BODY_ERRORS)
    async def rag(self, request: Request) -> RagResponse:
        body: RagRequest = await self._parse(request, RagRequest)
        start = time.perf_counter()
        retrieved = await self._retrieve(request, body.question, body.top_k, ["question"])
        retrieved_at = time.perf_counter()
        answer = await self._generate(request, body.question, retrieved, self._budget(body.max_new_tokens),
                                      ["question"])
        done = time.perf_counter()
        return RagResponse(answer=answer.text, documents=_documents(retrieved), store_version=retrieved.store_version,
                           timings=Timings(retrieve_s=retrieved_at - start, generate_s=done - retrieved_at,
                                           total_s=done - start))

    @api.post("/v1/chat/completions", openapi_extra=openapi_body(ChatRequest), responses={**BODY_ERRORS, **STREAMED})
    async def chat(self, request: Request):
        body: ChatRequest = await self._parse(request, ChatRequest)
        question, budget, field = body.question(), self._budget(body.new_tokens()), body.question_field()
        retrieved = await self._retrieve(request, question, body.top_k, field)
        documents, cid = _documents(retrieved), completion_id()
        notes = footnotes(documents) if (self.settings.footnotes if body.footnotes is None else body.footnotes) else ""
        if not body.stream:
            answer = await self._generate(request, question, retrieved, budget, field)
            return chat_completion(cid, self.settings.model_name, answer.text + notes, documents,
                                   answer.finish_reason, answer.usage(), retrieved.store_version)
        events = self._chat_events(request, cid, body, (question, retrieved, budget), field, documents, notes)
        return StreamingResponse(events, media_type="text/event-stream")

    async def _chat_events(self, request: Request, cid: str, body: ChatRequest, ask: tuple[str, Retrieved, int],
                           field: list, documents: list[Document], notes: str) -> AsyncIterator[str]:
        """The streamed completion: citations, answer pieces, [footnotes], finish reason, [usage]."""
        name, started = self.settings.model_name, time.perf_counter()
        # Citations first: the client can show sources while the answer streams in.
        yield _sse(chat_chunk(cid, name, {"role": "assistant", "content": ""}, documents=documents,
                              store_version=ask[1].store_version))
        try:
            async for piece in self._stream(ask):
                if isinstance(piece, Answer):  # the last item: usage and finish reason
                    answer = piece
                else:
                    yield _sse(chat_chunk(cid, name, {"content": piece}))
        # The status line has gone out with the citations: an error is reported the way OpenAI
        # streams report one, as an event with `error` (the openai client raises it).
        except ModelInputError as exc:
            yield _sse({"error": _input_error(exc, field).openai_error()})
            return
        except Exception:
            log.exception("stream %s failed", cid)
            yield _sse({"error": {"message": "internal error while generating", "type": "server_error",
                                  "param": None, "code": None}})
            return
        note(request, generate_s=time.perf_counter() - started, completion_tokens=answer.completion_tokens)
        if notes:
            yield _sse(chat_chunk(cid, name, {"content": notes}))
        yield _sse(chat_chunk(cid, name, {}, finish=answer.finish_reason))
        if body.wants_usage():
            yield _sse(chat_chunk(cid, name, None, usage=answer.usage()))
        yield _sse("[DONE]")


def bind_app(settings: ServeSettings, deployment_options: dict[str, dict] | None = None):
    """The bound application. `deployment_options` (deployment name -> `.options(...)` kwargs)
    lets local runs apply the same replica/autoscaling settings `serve deploy` reads from YAML."""
    options = deployment_options or {}

    def bind(deployment, *init_args):
        return deployment.options(**options.get(deployment.name, {})).bind(*init_args)

    return bind(RagIngress, settings, bind(Retriever, settings), bind(Generator, settings))


def build_app(args: dict):
    """Builder for `serve deploy`/`serve run` (exactly one parameter: the YAML `args`). The checkpoint
    and store are checked here, as `clara serve` checks them, so a wrong path fails the deploy once
    (`serve status` shows the error) instead of every replica failing in turn."""
    settings = ServeSettings.model_validate(args)
    check_inputs(settings)
    return bind_app(settings)
