"""The tiny RAG application's data, shared by the Serve tests and the multi-node tests: a saved tiny
checkpoint, a real CompressedStore of four documents, and the settings that serve them."""
from __future__ import annotations

from pathlib import Path

TOKEN = "test-token"
DOCS = {
    "paris": "Paris is the capital of France and sits on the river Seine.",
    "tokyo": "Tokyo is the capital of Japan and the largest city of Asia.",
    "nile": "The Nile is a river in Africa that flows into the Mediterranean Sea.",
    "oxygen": "Oxygen is a chemical element with symbol O and atomic number 8.",
}


def build_checkpoint_and_store(root: Path, tiny_config) -> tuple[str, str]:
    """A saved tiny checkpoint whose query reasoner equals its compressor (prepare_stage
    'end_to_end'), so a question equal to a document's text encodes exactly like that document.
    Its generator adapter is random, not zero: the bare tiny backbone answers only newlines, which
    strip to an empty answer; these weights write words, as a streamed answer needs."""
    import torch

    from clara_ray import CLaRa
    from clara_ray.store import DocRecord, StoreWriter, checkpoint_identity

    model = CLaRa.from_config(tiny_config, device="cpu")
    model.prepare_stage("end_to_end")
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.adapter_parameters("generator"):
            param.normal_(0.0, 0.2)
    checkpoint, store = root / "checkpoint", root / "store"
    model.save_pretrained(checkpoint)
    vectors = model.compress_documents(list(DOCS.values())).numpy()
    with StoreWriter(store, checkpoint_identity(checkpoint, model)) as writer:
        writer.add(vectors, [DocRecord(id=i, text=t, source=f"{i}.md") for i, t in DOCS.items()])
        writer.publish()
    return str(checkpoint), str(store)


def tiny_serve_settings(checkpoint: str, store: str):
    from serve.settings import ServeSettings

    return ServeSettings(
        checkpoint=checkpoint, store=store, auth_token=TOKEN, default_top_k=2, default_max_new_tokens=4,
        limits={"max_body_bytes": 4096, "max_question_chars": 300, "max_top_k": 3, "max_new_tokens": 8},
    )
