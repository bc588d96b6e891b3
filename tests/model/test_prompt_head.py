"""Fast tier: generation after a cached prompt head gives the answers a full prefill gives."""
from __future__ import annotations

import copy

import pytest
import torch

from clara_ray.model import prompts
from clara_ray.model.prompt_head import shared_head
from model_helpers import randomise_adapters

QUESTIONS = ["Where?", "Which of the two documents mentions the boiling point of water?"]
DOCS = [["The Eiffel tower is in Paris.", "Water boils at 100 degrees."],
        ["Bees make honey.", "The Nile is a long river in Africa, flowing north."]]


@pytest.fixture(scope="module")
def generators(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model, seed=3)
    model.mark_trained("end_to_end")
    model.eval()
    plain, cached = copy.deepcopy(model), copy.deepcopy(model)
    plain.merge_adapter("generator")
    cached.merge_adapter("generator")
    cached.cache_prompt_head()
    return model, plain, cached


def test_shared_head_is_the_longest_common_prefix():
    assert shared_head([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert shared_head([[7], [8]]) == []


def test_cached_head_gives_the_same_tokens_for_compressed_and_text_prompts(generators):
    model, plain, cached = generators
    compressed = [model.compress_documents(docs) for docs in DOCS]
    # Questions of different lengths: the shorter row is left-padded, so the rearrangement matters.
    expected = plain.generate_ids_from_compressed(QUESTIONS, compressed, max_new_tokens=8)
    assert torch.equal(cached.generate_ids_from_compressed(QUESTIONS, compressed, max_new_tokens=8), expected)
    assert cached.generate_from_text(QUESTIONS, DOCS, max_new_tokens=8) == \
        plain.generate_from_text(QUESTIONS, DOCS, max_new_tokens=8)


def test_the_head_forward_is_skipped(generators):
    _, plain, cached = generators
    seen: list[int] = []
    hook = cached.language_model.model.layers[0].register_forward_pre_hook(
        lambda _, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"]).shape[1]),
        with_kwargs=True)
    try:
        cached.generate_from_text(QUESTIONS[:1], DOCS[:1], max_new_tokens=1)
    finally:
        hook.remove()
    full = len(plain._prompt_ids(*prompts.answer_turn(DOCS[0], QUESTIONS[0])))
    # one forward (a single new token), over the prompt minus its cached head
    assert seen == [full - len(cached._head_cache.head)]


def test_a_prompt_without_the_head_is_generated_without_the_cache(generators):
    _, _, cached = generators
    head = cached._head_cache
    ids = torch.tensor([[5, 6, 7, 8, 9] + head.head.tolist()])  # head not at the start
    assert head.arrange(ids, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}) is None


def test_only_a_merged_generator_caches_its_head(tiny_model):
    model = copy.deepcopy(tiny_model)
    with pytest.raises(RuntimeError, match="merge_adapter\\('generator'\\)"):
        model.cache_prompt_head()
    model.merge_adapter("query_reasoner")
    with pytest.raises(RuntimeError, match="merge_adapter\\('generator'\\)"):
        model.cache_prompt_head()
