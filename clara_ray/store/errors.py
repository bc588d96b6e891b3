"""The one error type a store reader or writer raises for a bad store."""
from __future__ import annotations

from clara_ray.config import InputError


class StoreError(InputError, RuntimeError):
    """A store that cannot be used as asked: missing, corrupted, or built from another checkpoint."""
