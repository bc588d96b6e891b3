import numpy as np
import pytest

from clara_ray.ingest.negatives import mined_negatives, random_negatives


def test_mined_negatives_are_the_most_similar_others_hardest_first():
    keys = ["a", "b", "c", "d"]
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.4]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    neg = mined_negatives(keys, vectors, 2)
    assert neg["a"] == ["b", "d"] and neg["c"] == ["d", "b"]
    assert all(k not in v for k, v in neg.items())


def test_random_negatives_exclude_self_and_are_reproducible():
    keys = [f"k{i}" for i in range(20)]
    first, again, other = (random_negatives(keys, 5, seed) for seed in (0, 0, 1))
    assert first == again and first != other
    assert all(len(v) == 5 == len(set(v)) and k not in v for k, v in first.items())


@pytest.mark.parametrize("method", ["mined", "random"])
def test_small_corpora_give_as_many_negatives_as_exist(method):
    keys = ["x", "y"]
    neg = (mined_negatives(keys, np.eye(2, dtype=np.float32), 9) if method == "mined"
           else random_negatives(keys, 9, 0))
    assert neg == {"x": ["y"], "y": ["x"]}


def test_minilm_embedder_ranks_the_related_passage_first():
    from clara_ray.ingest.negatives import Embedder

    texts = ["Bees make honey from nectar.", "Honey is produced by bees in hives.", "Volcanoes erupt lava."]
    out = Embedder(batch_size=8)({"key": ["bee1", "bee2", "lava"], "text": texts})
    vectors = np.array(out["embedding"], dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert mined_negatives(out["key"], vectors, 1)["bee1"] == ["bee2"]
