"""One structured log line and the metrics of every HTTP request (docs/operations.md, "Request logs").

The routes note what they learn on the way (`note(request, ...)`: top_k, store version, step
timings, tokens); the middleware adds the request id, route, status and total time once the body
has been sent (a stream's, at its end) and writes the line as JSON to the replica's log. Headers
are never logged (the bearer token is one), nor the question unless `log_questions` is set.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable

from fastapi import Request, Response

from serve.metrics import metrics

log = logging.getLogger("ray.serve.clara.requests")


def note(request: Request, **facts) -> None:
    """Record facts about this request for its log line and metrics."""
    if not hasattr(request.state, "clara"):
        request.state.clara = {}
    request.state.clara.update(facts)


def _route(request: Request) -> str:
    """The matched route's path template; one label for every unknown path (no label per random URL)."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _request_id(request: Request) -> str:
    """Serve's id of the request (the `x-request-id` response header), to match Serve's own logs."""
    try:
        from ray.serve.context import _get_serve_request_context

        return _get_serve_request_context().request_id or request.headers.get("x-request-id") or uuid.uuid4().hex
    except Exception:  # outside a replica (a plain FastAPI test client)
        return request.headers.get("x-request-id") or uuid.uuid4().hex


def _finish(request: Request, status: int, started: float) -> None:
    try:
        _report(request, status, time.perf_counter() - started)
    except Exception:  # reporting must never fail a request that was served
        log.exception("could not report a request")


def _report(request: Request, status: int, total: float) -> None:
    facts = getattr(request.state, "clara", {})
    route = _route(request)
    m = metrics()
    tags = {"route": route}
    m.requests.inc(tags={**tags, "status": str(status)})
    m.request_seconds.observe(total, tags=tags)
    if "retrieve_s" in facts:
        m.retrieval_seconds.observe(facts["retrieve_s"], tags=tags)
    if "generate_s" in facts:
        m.generation_seconds.observe(facts["generate_s"], tags=tags)
    if facts.get("completion_tokens"):
        m.generated_tokens.inc(facts["completion_tokens"], tags=tags)
    line = {"event": "request", "request_id": _request_id(request), "route": route, "method": request.method,
            "status": status, "total_s": round(total, 4), **facts}
    log.info(json.dumps(line, default=str))


async def _sent(body: AsyncIterator, done: Callable[[], None]) -> AsyncIterator:
    try:
        async for chunk in body:
            yield chunk
    finally:
        done()


async def observe_requests(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """HTTP middleware: count, time and log the request once its response body has gone out."""
    started = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:
        _finish(request, 500, started)
        raise
    response.body_iterator = _sent(response.body_iterator, lambda: _finish(request, response.status_code, started))
    return response
