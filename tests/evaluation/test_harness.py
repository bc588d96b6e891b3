"""The harness on the tiny model: rankings, oracle top-k, what the generator reads, scores."""
import torch

from clara_ray.evaluation.harness import CLOSED, Evaluator, HarnessConfig, SystemSpec, select_topk, summarise
from clara_ray.evaluation.loaders import EvalQuestion
from clara_ray.evaluation.metrics import answer_scores

DOCS = [f"Document {i} says the answer number {i} is {word}." for i, word in
        enumerate(["red", "blue", "green", "amber", "violet", "black", "white"])]
QUESTIONS = [
    EvalQuestion(id="a", dataset="toy", question="What colour is number 3?", answers=["amber"], docs=DOCS, pos_index=[3]),
    EvalQuestion(id="b", dataset="toy", question="What colour is number 6?", answers=["white", "snow"],
                 docs=DOCS[4:], pos_index=[2]),
]


def test_select_topk_normal_and_oracle():
    ranked = [3, 0, 1, 2, 4]
    assert select_topk(ranked, [4], 2, oracle=False) == [3, 0]
    assert select_topk(ranked, [4], 2, oracle=True) == [3, 4]
    assert select_topk(ranked, [0, 4], 2, oracle=True) == [0, 4]   # 3 makes room, rank order kept
    assert select_topk(ranked, [1, 2, 4], 2, oracle=True) == [1, 2]  # best-ranked gold first
    assert select_topk(ranked, [], 3, oracle=True) == [3, 0, 1]


def test_evaluator_rows_match_model_api(tiny_model):
    config = HarnessConfig(top_k=2, max_new_tokens=4, retrievers=["clara", "bm25"], systems=[
        SystemSpec(name="clara", kind="clara"),
        SystemSpec(name="text_bm25", kind="text_rag", retriever="bm25"),
        SystemSpec(name="closed_book", kind="closed_book"),
    ])
    rows = Evaluator(tiny_model, config).evaluate(QUESTIONS)
    assert [r["id"] for r in rows] == ["a", "b"]
    assert set(rows[0]["systems"]) == {"clara/normal", "clara/oracle", "text_bm25/normal", "text_bm25/oracle",
                                       f"closed_book/{CLOSED}"}

    # CLaRa's ranking is the model's own query-reasoner top-k
    _, model_topk = tiny_model.generate_from_questions([QUESTIONS[0].question], [DOCS], max_new_tokens=1)
    assert rows[0]["retrieval"]["clara"]["ranked"][:2] == model_topk[0][:2]
    # BM25 finds the lexical match ("number 3") and its Recall@1 says so
    assert rows[0]["retrieval"]["bm25"]["ranked"][0] == 3
    assert rows[0]["retrieval"]["bm25"]["recall@1"] == 1.0

    for row, q in zip(rows, QUESTIONS):
        oracle = row["systems"]["clara/oracle"]
        assert q.pos_index[0] in oracle["topk"] and len(oracle["topk"]) == 2
        assert row["systems"]["clara/normal"]["topk"] == row["retrieval"]["clara"]["ranked"][:2]
        for result in row["systems"].values():
            assert {k: result[k] for k in ("acc", "em", "f1")} == answer_scores(result["prediction"], q.answers)

    # the generator read exactly the compressed top-k documents of the oracle setting
    top = rows[1]["systems"]["clara/oracle"]["topk"]
    compressed = tiny_model.compress_documents([QUESTIONS[1].docs[i] for i in top])
    expected = tiny_model.generate_from_compressed_documents_and_questions([QUESTIONS[1].question], [compressed], 4)
    assert rows[1]["systems"]["clara/oracle"]["prediction"] == expected[0]
    # text RAG read the BM25 top-k as text with the bare backbone
    text_top = rows[1]["systems"]["text_bm25/normal"]["topk"]
    expected = tiny_model.generate_from_text([QUESTIONS[1].question], [[QUESTIONS[1].docs[i] for i in text_top]], 4,
                                             adapter=None)
    assert rows[1]["systems"]["text_bm25/normal"]["prediction"] == expected[0]

    summary = summarise(rows)
    assert summary["num_questions"] == 2
    f1s = [r["systems"]["clara/normal"]["f1"] for r in rows]
    assert summary["generation"]["clara/normal"]["f1"] == sum(f1s) / 2
    assert summary["retrieval"]["bm25"]["recall@5"] == sum(r["retrieval"]["bm25"]["recall@5"] for r in rows) / 2
    assert summary["generation"]["clara/normal"]["latency_s"] > 0
