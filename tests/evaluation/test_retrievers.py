"""Baseline retrievers on tiny corpora: the obviously matching document must rank first."""
import numpy as np
import pytest

from clara_ray.evaluation.retrievers import BM25Retriever, ClaraRetriever, MiniLMRetriever, build_retriever

DOCS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The Great Wall of China stretches thousands of kilometres across northern China.",
    "Penguins are flightless birds living mostly in the Southern Hemisphere.",
]
QUESTIONS = ["Which tower stands in Paris?", "How do plants turn light into chemical energy?",
             "Where do flightless penguins live?"]
EXPECTED_FIRST = [0, 1, 3]


def test_bm25_ranks_matching_document_first():
    ranked = BM25Retriever().rank(QUESTIONS, [DOCS] * 3)
    assert [r[0] for r in ranked] == EXPECTED_FIRST
    assert all(sorted(r) == [0, 1, 2, 3] for r in ranked)


def test_minilm_ranks_matching_document_first_with_paraphrased_question():
    # no shared content word with the gold document: a lexical match cannot explain the hit
    ranked = MiniLMRetriever().rank(["Which famous landmark is made of iron in the French capital?"] + QUESTIONS[1:],
                                    [DOCS] * 3)
    assert [r[0] for r in ranked] == EXPECTED_FIRST


def test_per_question_candidates_are_ranked_separately():
    ranked = BM25Retriever().rank(["penguins birds", "penguins birds"], [DOCS, DOCS[::-1]])
    assert ranked[0][0] == 3 and ranked[1][0] == 0


def test_clara_retriever_matches_model_cosine(tiny_model):
    retriever = ClaraRetriever(tiny_model, batch_size=3)
    ranked = retriever.rank(QUESTIONS[:2], [DOCS, DOCS[:3]])
    queries = tiny_model.retrieval_vectors(tiny_model.encode_queries(QUESTIONS[:2])).numpy()
    documents = tiny_model.retrieval_vectors(tiny_model.compress_documents(DOCS)).numpy()
    expected = [list(np.argsort(-(documents @ queries[0]))), list(np.argsort(-(documents[:3] @ queries[1])))]
    assert ranked == expected
    np.testing.assert_allclose(retriever.compressed(DOCS[1:2]), tiny_model.compress_documents(DOCS[1:2]).numpy(),
                               atol=1e-5)


def test_build_retriever_rejects_unknown_and_clara_without_model():
    with pytest.raises(ValueError, match="unknown retriever 'tfidf'"):
        build_retriever("tfidf")
    with pytest.raises(ValueError, match="needs a CLaRa model"):
        build_retriever("clara")
