"""OpenAI-compatible chat calls with rate limiting, retries and JSON validation.

Transport faults (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
and full jitter (tenacity; the openai client's own retries are off so the config governs).
Replies that should be JSON are repaired when the damage is cosmetic (code fences, prose
around the object, trailing commas, unquoted keys via hjson) and re-requested otherwise.
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Any, Callable, Optional, TypeVar

import openai
from pydantic import BaseModel, ValidationError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from clara_ray.config import validation_problems
from clara_ray.ingest.config import ApiConfig
from clara_ray.ingest.failures import ItemError

M = TypeVar("M", bound=BaseModel)


class ApiCallError(ItemError):
    """A call that failed for good; `kind` goes to errors.jsonl."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class RateLimiter:
    """Spaces request starts at least `1/rate` seconds apart (thread-safe, per process)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_at)
            self.next_at = start + self.interval
        if start > now:
            time.sleep(start - now)


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model reply, repairing cosmetic damage; ValueError if there is none."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the reply")
    body = body[start:end + 1]
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        import hjson

        try:
            value = json.loads(json.dumps(hjson.loads(body)))
        except Exception as exc:
            raise ValueError(f"unrepairable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


class ChatClient:
    """One model on one endpoint; share a rate of `api.requests_per_second / workers`."""

    def __init__(self, api: ApiConfig, model: str, workers: int = 1):
        if not api.base_url or not model:
            raise ValueError("ChatClient needs api.base_url and a model name (config or environment)")
        self.api, self.model = api, model
        self.client = openai.OpenAI(base_url=api.base_url, api_key=api.api_key or "not-needed",
                                    timeout=api.timeout_s, max_retries=0)
        self.limiter = RateLimiter(api.requests_per_second / max(1, workers))
        self.calls = 0

    def _request(self, messages: list[dict], max_tokens: int, response_format: dict | None) -> str:
        self.limiter.wait()
        self.calls += 1
        extra = {"response_format": response_format} if response_format else {}
        reply = self.client.chat.completions.create(
            model=self.model, messages=messages, max_tokens=max_tokens,
            temperature=self.api.temperature, **extra)
        content = reply.choices[0].message.content if reply.choices else None
        if not content or not content.strip():
            raise ApiCallError("empty_reply", "the model returned no content")
        return content

    def complete(self, messages: list[dict], max_tokens: int | None = None,
                 response_format: dict | None = None) -> str:
        """Text of one reply; transient faults retried with backoff + jitter."""
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=self.api.initial_backoff_s, max=self.api.max_backoff_s),
            stop=stop_after_attempt(self.api.max_attempts), reraise=True)
        try:
            return retrying(self._request, messages, max_tokens or self.api.max_tokens, response_format)
        except openai.APIStatusError as exc:
            retried = f" after {self.api.max_attempts} attempts" if is_transient(exc) else ""
            raise ApiCallError("api_error", f"HTTP {exc.status_code}{retried}: {exc.message}") from None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
            raise ApiCallError(kind, f"{type(exc).__name__} after {self.api.max_attempts} attempts") from None

    def _response_format(self, schema: type[BaseModel]) -> dict | None:
        if self.api.structured_output == "json_schema":
            return {"type": "json_schema",
                    "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()}}
        if self.api.structured_output == "json_object":
            return {"type": "json_object"}
        return None

    def complete_json(self, messages: list[dict], schema: type[M], max_tokens: int | None = None,
                      check: Optional[Callable[[M], None]] = None) -> M:
        """A reply validated against `schema` (and `check`, which raises ValueError); bad JSON is
        repaired or re-requested, then raised as ApiCallError('invalid_json')."""
        problem, attempt = "", messages
        for _ in range(self.api.json_attempts):
            text = self.complete(attempt, max_tokens, self._response_format(schema))
            try:
                value = schema.model_validate(parse_json_object(text))
                if check is not None:
                    check(value)
                return value
            except ValueError as exc:  # includes pydantic's ValidationError
                problem = _short(exc)
                # The same prompt again gets the same reply from a greedy model: say what was wrong.
                attempt = [*messages, {"role": "assistant", "content": text},
                           {"role": "user", "content": f"That reply was rejected ({problem}). "
                                                       "Reply again with the corrected JSON object only."}]
        raise ApiCallError("invalid_json", f"no valid {schema.__name__} after {self.api.json_attempts} "
                                           f"attempts; last problem: {problem}")


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return validation_problems(exc, limit=3)
    return str(exc)[:300]
