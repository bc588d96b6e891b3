"""Load the checkpoint and store a replica serves (safetensors/JSON/FAISS only: no pickle)."""
from __future__ import annotations

from pathlib import Path

from serve.settings import ServeSettings


def check_inputs(settings: ServeSettings) -> None:
    """The checkpoint and store every replica will load, checked once before any starts: a wrong
    path, a damaged checkpoint or a store another checkpoint built is then one error naming it,
    rather than replicas that fail one after another while Serve retries them."""
    from clara_ray.model.configuration import CLaRaConfig
    from clara_ray.store.store import published_version

    CLaRaConfig.from_pretrained(settings.checkpoint)
    published_version(Path(settings.store), expect_checkpoint=Path(settings.checkpoint))


def load_model(settings: ServeSettings, adapter: str):
    """The checkpoint with `adapter`, the only one this replica runs, merged into the weights."""
    import torch

    from clara_ray import CLaRa

    torch.set_num_threads(settings.torch_threads)
    overrides = {"dtype": settings.dtype} if settings.dtype else {}
    model = CLaRa.from_pretrained(settings.checkpoint, device=settings.model_device(adapter), **overrides)
    model.eval()
    model.merge_adapter(adapter)
    return model


def open_store(settings: ServeSettings, fingerprint: str | None = None):
    """The published version of the store, verified; `fingerprint`: the checkpoint's, if computed already."""
    from clara_ray.store import CompressedStore, checkpoint_fingerprint

    # The store records which checkpoint compressed it: vectors from another one would be garbage
    # to this query reasoner and generator, so refuse it rather than answer nonsense.
    expected = fingerprint or checkpoint_fingerprint(settings.checkpoint)
    return CompressedStore.open(settings.store, expect_checkpoint=expected)
