"""Fast tier: the exact training speed-ups change cost, never results (tiny random Llama)."""
from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

from clara_ray.data.records import parse_record
from clara_ray.train.data import length_bucketed, record_size
from model_helpers import randomise_adapters, stage1_records, stage3_records


def _instruct_records():
    docs = ["Ada wrote the first program in 1843.", "Paris is the capital of France, on the Seine.",
            "Water boils at 100 degrees.", "The Nile is long."]
    return [parse_record({"question": q, "docs": docs[i:i + 2] or docs[:2], "answer": a}, "instruct")
            for i, (q, a) in enumerate([("Who wrote it?", "Ada"), ("Which river runs through the capital?",
                                                                    "the Seine, a long river"), ("When?", "1843")])]


@pytest.mark.parametrize("stage,records", [("compress_pretrain", stage1_records), ("instruct", _instruct_records),
                                           ("end_to_end", stage3_records)])
def test_label_logits_only_gives_the_full_forward_loss_and_gradients(tiny_model, stage, records):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage(stage)
    model.eval()  # no LoRA dropout: both passes must see the same network
    results = []
    for only in (False, True):
        model.label_logits_only = only
        model.zero_grad(set_to_none=True)
        out = model(records(), stage)
        out.loss.backward()
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (full_loss, full_grads), (cut_loss, cut_grads) = results
    torch.testing.assert_close(cut_loss, full_loss)
    for a, b in zip(full_grads, cut_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_a_records_loss_does_not_depend_on_the_padding_its_batch_mates_force(tiny_model):
    """Length bucketing only changes who shares a micro-batch; this is what makes that exact."""
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.eval()
    short, long = stage1_records()[0], parse_record(
        {"data_type": "paraphrase", "answers": ["word " * 20], "docs": ["a much longer document " * 5]},
        "compress_pretrain")
    with torch.no_grad():
        alone = model([short], "compress_pretrain")
        padded = model([short, short.model_copy(update={"docs": short.docs})], "compress_pretrain")
        mixed_ce = model([short, long], "compress_pretrain")
        long_alone = model([long], "compress_pretrain")
    torch.testing.assert_close(padded.ce, alone.ce)
    # the mean over tokens of a mixed batch is the token-weighted mean of its records' losses
    n_short = len(model.tokenizer(short.answers[0] and "\n".join(
        f"Question: {q}\nAnswer: {a}" for q, a in zip(short.question, short.answers)))["input_ids"]) + 1
    n_long = len(model.tokenizer(long.answers[0], add_special_tokens=False)["input_ids"]) + 1
    expected = (alone.ce * n_short + long_alone.ce * n_long) / (n_short + n_long)
    torch.testing.assert_close(mixed_ce.ce, expected, rtol=1e-4, atol=1e-5)
    assert mixed_ce.num_positions > mixed_ce.num_tokens  # the short one was padded


def test_length_buckets_keep_every_record_once_and_cut_padding():
    rng = random.Random(0)
    records = [parse_record({"data_type": "paraphrase", "answers": ["x"], "docs": ["w" * rng.randint(1, 400)]},
                            "compress_pretrain") for _ in range(64)]
    stream = [records[i:i + 4] for i in range(0, 64, 4)]
    bucketed = list(length_bucketed(iter(stream), 8, random.Random(1)))
    assert sorted(map(id, itertools.chain(*bucketed))) == sorted(map(id, records))
    assert all(len(b) == 4 for b in bucketed)
    waste = lambda batches: sum(len(b) * max(map(record_size, b)) - sum(map(record_size, b)) for b in batches)
    assert waste(bucketed) < waste(stream) / 3


def _paragraph_pairs():
    """Two paragraphs, each with its reconstruction and its QA record (as build_squad_data writes)."""
    docs = ["Ada wrote the first program in 1843.", "Paris is the capital of France, on the Seine, a river."]
    return [parse_record(r, "compress_pretrain") for d, q, a in zip(docs, ["Who wrote it?", "Which river?"],
                                                                      ["Ada", "the Seine"])
            for r in ({"data_type": "paraphrase", "answers": [d], "docs": [d]},
                      {"data_type": "qa", "question": [q], "answers": [a], "docs": [d]})]


def test_a_document_its_records_share_is_compressed_once_with_the_same_loss_and_gradients(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("compress_pretrain")
    model.eval()  # no LoRA dropout: both passes must see the same network
    results = []
    for distinct in (False, True):
        model.encode_distinct = distinct
        model._rng = random.Random(0)  # the same paraphrase prompts in both passes
        model.zero_grad(set_to_none=True)
        out = model(_paragraph_pairs(), "compress_pretrain")
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (every, every_grads), (once, once_grads) = results
    torch.testing.assert_close(once.ce, every.ce)
    torch.testing.assert_close(once.mse, every.mse)
    torch.testing.assert_close(once.loss, every.loss)
    for a, b in zip(every_grads, once_grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in once_grads)
    # the compressor read the 2 documents once each instead of 4 rows: 2 rows fewer computed
    two_documents = model._memory_inputs([r.docs[0] for r in _paragraph_pairs()[::2]]).attention_mask
    assert every.num_positions - once.num_positions == two_documents.numel()


def test_distinct_encoding_weighs_the_mse_of_a_repeated_document_by_its_copies(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.eval()
    texts = ["Ada wrote the first program in 1843.", "Water boils at 100 degrees at sea level."]
    with torch.no_grad():
        (a, mse_a), (b, mse_b) = (model._encode([t], "compressor", with_mse=True) for t in texts)
        states, mse = model._encode([texts[0], texts[1], texts[0]], "compressor", with_mse=True)
    torch.testing.assert_close(states, torch.cat([a, b, a]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mse, (2 * mse_a + mse_b) / 3, rtol=1e-4, atol=1e-6)


def test_candidate_cache_gives_the_same_topk_loss_and_gradients_as_recompressing(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("end_to_end")
    torch.manual_seed(0)
    results = []
    for cached in (False, True, True):  # the second cached pass reads vectors the first stored
        if cached and model._candidate_cache is None:
            model.cache_candidates()
        model.zero_grad(set_to_none=True)
        model.eval()  # generator/query dropout off, so the passes are comparable
        out = model(stage3_records(), "end_to_end")
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in model.adapter_parameters("query_reasoner")]))
    (plain, plain_grads), (first, _), (reused, reused_grads) = results
    assert reused.num_tokens < first.num_tokens  # the documents were not compressed again
    for out in (first, reused):
        torch.testing.assert_close(out.loss, plain.loss)
        assert out.recall == plain.recall
    for a, b in zip(plain_grads, reused_grads):
        torch.testing.assert_close(b, a)


def test_candidate_cache_refuses_a_stage_that_trains_the_compressor(tiny_model):
    model = copy.deepcopy(tiny_model)
    model.prepare_stage("instruct")
    with pytest.raises(RuntimeError, match="frozen compressor"):
        model.cache_candidates()


def test_stage2_with_a_frozen_compressor_trains_the_generator_only_on_cached_vectors(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("instruct", generator_init="previous", train_compressor=False)
    assert not model.trains("compressor") and model.trains("generator")
    model.cache_candidates()
    model.eval()
    first = model(_instruct_records(), "instruct")
    first.loss.backward()
    assert all(p.grad is None for p in model.adapter_parameters("compressor"))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters("generator"))
    again = model(_instruct_records(), "instruct")
    assert again.num_tokens < first.num_tokens  # documents came from the cache
    torch.testing.assert_close(again.loss, first.loss)
    # the same generator reading the compressor's vectors computed with gradient (no MSE term)
    model.prepare_stage("instruct", generator_init="previous")
    with torch.no_grad():
        trained = model(_instruct_records(), "instruct")
    torch.testing.assert_close(first.loss, trained.ce)
    model.mark_trained("instruct")
    assert model.config.trained["generator"] == "instruct"


def test_frozen_compressor_stage2_does_not_mark_the_compressor_trained(tiny_model):
    model = copy.deepcopy(tiny_model)
    model.prepare_stage("compress_pretrain")
    model.mark_trained("compress_pretrain")
    model.prepare_stage("instruct", generator_init="previous", train_compressor=False)
    model.mark_trained("instruct")
    assert model.config.trained["compressor"] == "compress_pretrain"
    with pytest.raises(ValueError, match="instruct stage only"):
        model.prepare_stage("end_to_end", train_compressor=False)
