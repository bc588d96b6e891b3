"""Fast tier: stage-3 candidates read from a real precompressed store (fp16 shards + FAISS)
train as recompressing them would; a store of another compressor is refused."""
from __future__ import annotations

import copy

import pytest
import torch

from clara_ray.config import InputError
from clara_ray.store import CheckpointIdentity, DocRecord, StoreWriter
from clara_ray.train.loop import stored_candidates
from model_helpers import randomise_adapters, stage3_records


def write_store(root, model, texts: list[str]) -> None:
    """What pipelines.precompress stores: the compressor's vectors in fp16, by document."""
    identity = CheckpointIdentity(fingerprint="f" * 64, backbone="tiny-random",
                                  compression_rate=model.config.compression_rate,
                                  num_memory_tokens=model.num_memory_tokens, hidden_size=model.hidden_size,
                                  path="/ckpt")
    with StoreWriter(root, identity) as writer:
        writer.add(model.compress_documents(texts).float().numpy(),
                   [DocRecord(id=f"d{i}", text=t, source="test", chunk=0) for i, t in enumerate(texts)])
        writer.publish()


@pytest.fixture()
def stage3_model(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("end_to_end")
    model.eval()  # no dropout: passes are comparable
    return model


def stage3_pass(model):
    model.zero_grad(set_to_none=True)
    out = model(stage3_records(), "end_to_end")
    out.loss.backward()
    return out, [p.grad.clone() for p in model.adapter_parameters("query_reasoner")]


def test_stored_vectors_give_the_loss_topk_and_gradients_of_recompressing(stage3_model, tmp_path):
    model = stage3_model
    docs = stage3_records()[0].docs
    write_store(tmp_path / "store", model, docs[:-1])  # one candidate is not in the store
    plain, plain_grads = stage3_pass(model)
    model.cache_candidates(stored_candidates(str(tmp_path / "store"), model))
    stored, stored_grads = stage3_pass(model)
    assert (model.stored_candidates.found, model.stored_candidates.missed) == (len(docs) - 1, 1)
    # only the missing document was compressed here
    compressed_tokens = plain.num_tokens - stored.num_tokens
    assert compressed_tokens > 0
    assert stored.recall == plain.recall
    torch.testing.assert_close(stored.loss, plain.loss, rtol=2e-3, atol=2e-3)  # fp16 storage
    for a, b in zip(plain_grads, stored_grads):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3)


def test_a_store_of_another_compressor_is_refused_naming_it(stage3_model, tiny_model, tmp_path):
    other = copy.deepcopy(tiny_model)
    randomise_adapters(other, seed=1)
    write_store(tmp_path / "store", other, stage3_records()[0].docs)
    with pytest.raises(InputError, match=r"candidate store .*store was not compressed by this model's compressor"):
        stored_candidates(str(tmp_path / "store"), stage3_model)


@pytest.mark.parametrize("stage, overrides, refused", [
    ("compress_pretrain", [], True),
    ("instruct", [], True),
    ("instruct", ["train_compressor=false"], False),
    ("instruct", ["train_compressor=false", "speed.candidate_cache=false"], True),
    ("end_to_end", [], False),
])
def test_only_a_stage_with_a_frozen_compressor_takes_a_candidate_store(tiny_stage, tmp_path, stage, overrides, refused):
    def config():
        init = {} if stage == "compress_pretrain" else {"init_from": tmp_path}
        return tiny_stage(stage, tmp_path, "s", **init, overrides=[f"speed.candidate_store={tmp_path}", *overrides])

    if refused:  # by the config, before Ray or a model starts
        with pytest.raises(InputError, match=f"speed.candidate_store is set but stage {stage}"):
            config()
    else:
        assert config().speed.candidate_store == str(tmp_path)


def test_stored_vectors_join_computed_ones_in_the_models_dtype(stage3_model, tmp_path):
    model = stage3_model.to(torch.bfloat16)  # the GPU profile's precision
    docs = stage3_records()[0].docs
    write_store(tmp_path / "store", model, docs[:-1])
    model.cache_candidates(stored_candidates(str(tmp_path / "store"), model))
    with torch.no_grad():
        vectors = model._frozen_compress(docs)  # stored fp16 and computed bf16 vectors in one batch
    assert vectors.dtype == torch.bfloat16  # not promoted to fp32 (twice the memory on a GPU)
    assert (model.stored_candidates.found, model.stored_candidates.missed) == (len(docs) - 1, 1)
