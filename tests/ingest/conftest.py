"""Ingest fixtures; the scripted OpenAI server and the test documents live in ingest_helpers.py."""
from __future__ import annotations

import pytest

from ingest_helpers import ScriptedOpenAI


@pytest.fixture
def scripted_api():
    """Factory: scripted_api(failure_rate=..., ...) -> started server; all stopped at teardown."""
    servers = []

    def start(**kwargs) -> ScriptedOpenAI:
        servers.append(ScriptedOpenAI(**kwargs).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


