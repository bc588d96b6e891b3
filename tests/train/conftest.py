"""Tiny-model stage configs for the trainer tests (2 Ray Train workers, ZeRO-2, CPU/gloo)."""
from __future__ import annotations

import pytest
from train_helpers import tiny_stage_config


@pytest.fixture()
def tiny_stage():
    return tiny_stage_config
