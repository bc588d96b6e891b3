"""The ingress's resend of a Retriever/Generator call whose replica died (serve/app.py): what is sent
again and what is not. The multi-node test (tests/multinode) kills real replicas and nodes."""
from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError

from serve.app import _model_call
from serve.deployments import ModelInputError
from serve.schemas import RequestError


def _calls_failing_with(errors: list[Exception]):
    """A call that raises each of `errors` in turn, then answers; it counts its attempts."""
    attempts = []

    async def call():
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return "answer"

    return call, attempts


def test_a_call_whose_replica_died_is_sent_again_up_to_the_retries():
    call, attempts = _calls_failing_with([ActorDiedError(), ActorUnavailableError("node lost", None)])
    assert asyncio.run(_model_call(call, ["question"], replica_loss_retries=2)) == "answer"
    assert len(attempts) == 3


def test_past_the_retries_the_replica_loss_propagates():
    call, attempts = _calls_failing_with([ActorDiedError()] * 3)
    with pytest.raises(ActorDiedError):
        asyncio.run(_model_call(call, ["question"], replica_loss_retries=2))
    assert len(attempts) == 3


def test_an_error_of_the_request_itself_is_never_sent_again():
    call, attempts = _calls_failing_with([ModelInputError("unreadable question")])
    with pytest.raises(RequestError) as refused:
        asyncio.run(_model_call(call, ["question"], replica_loss_retries=2))
    assert refused.value.status == 422 and len(attempts) == 1
