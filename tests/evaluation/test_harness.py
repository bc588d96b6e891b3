"""The harness on the tiny model: rankings, oracle top-k, what the generator reads, scores."""
import pytest
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
    # "Document 3 says the answer number 3 is amber." normalised: "amber" after 7 words (both questions)
    assert [r["answer_word"] for r in rows] == [7, 7]
    (group,) = summary["by_answer_position"]
    assert group["words"] == "0-29" and group["n"] == 2
    assert group["f1"]["clara/oracle"] == pytest.approx(summary["generation"]["clara/oracle"]["f1"])


FOREIGN = ["The Danube flows through ten countries into the Black Sea.", "Granite is an igneous rock."]
SWAPPABLE = [q.model_copy(update={"foreign_docs": [f]}) for q, f in zip(QUESTIONS, FOREIGN)]


def _close(a, b):
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-4)


def test_wrong_memory_generator_reads_foreign_not_gold(tiny_model, monkeypatch):
    """wrong_memory = the oracle top-k with the gold document swapped, in place, for a foreign one."""
    read = []  # (questions, compressed) of every generator call, spied on the real model

    def spy(questions, compressed, max_new_tokens=64):
        read.append((list(questions), compressed))
        return original(questions, compressed, max_new_tokens)

    original = tiny_model.generate_from_compressed_documents_and_questions
    monkeypatch.setattr(tiny_model, "generate_from_compressed_documents_and_questions", spy)
    config = HarnessConfig(top_k=2, max_new_tokens=4, settings=["oracle", "wrong_memory"], retrievers=["bm25"],
                           systems=[SystemSpec(name="clara", kind="clara"),
                                    SystemSpec(name="text_bm25", kind="text_rag", retriever="bm25")])
    rows = Evaluator(tiny_model, config).evaluate(SWAPPABLE)
    assert len(read) == 2  # oracle, then wrong_memory
    for i, (row, q) in enumerate(zip(rows, SWAPPABLE)):
        oracle, wrong = row["systems"]["clara/oracle"], row["systems"]["clara/wrong_memory"]
        assert wrong["topk"] == oracle["topk"] and wrong["foreign_at"] == [oracle["topk"].index(q.pos_index[0])]
        swapped = [q.docs[j] for j in oracle["topk"]]
        swapped[wrong["foreign_at"][0]] = q.foreign_docs[0]
        gold = tiny_model.compress_documents([q.docs[q.pos_index[0]]])[0]
        memories = read[1][1][i]
        assert _close(memories, tiny_model.compress_documents(swapped))
        assert not any(_close(m, gold) for m in memories)  # no gold memory left
        assert _close(read[0][1][i], tiny_model.compress_documents([q.docs[j] for j in oracle["topk"]]))
        # text RAG reads the same swap as text
        text_wrong = row["systems"]["text_bm25/wrong_memory"]
        text_docs = [q.docs[j] for j in text_wrong["topk"]]
        text_docs[text_wrong["foreign_at"][0]] = q.foreign_docs[0]
        expected = tiny_model.generate_from_text([q.question], [text_docs], 4, adapter=None)[0]
        assert text_wrong["prediction"] == expected

    with pytest.raises(ValueError, match="question 'a' has 0 foreign document"):
        Evaluator(tiny_model, config).evaluate(QUESTIONS)


def test_foreign_memory_generator_reads_only_foreign_documents(tiny_model, monkeypatch):
    """foreign_memory = all k documents replaced by the question's first k foreign ones."""
    read = []

    def spy(questions, compressed, max_new_tokens=64):
        read.append(compressed)
        return original(questions, compressed, max_new_tokens)

    original = tiny_model.generate_from_compressed_documents_and_questions
    monkeypatch.setattr(tiny_model, "generate_from_compressed_documents_and_questions", spy)
    extra = ["Basalt cools from lava.", "The Rhine rises in the Alps."]
    questions = [q.model_copy(update={"foreign_docs": q.foreign_docs + extra}) for q in SWAPPABLE]
    config = HarnessConfig(top_k=2, max_new_tokens=4, settings=["oracle", "foreign_memory"], retrievers=["bm25"],
                           systems=[SystemSpec(name="clara", kind="clara")])
    assert config.foreign_docs_needed == 2 and config.needs_foreign_docs
    rows = Evaluator(tiny_model, config).evaluate(questions)
    for i, (row, q) in enumerate(zip(rows, questions)):
        foreign = row["systems"]["clara/foreign_memory"]
        assert foreign["foreign_at"] == [0, 1] and foreign["topk"] == row["systems"]["clara/oracle"]["topk"]
        assert _close(read[1][i], tiny_model.compress_documents(q.foreign_docs[:2]))
        own = tiny_model.compress_documents(q.docs)
        assert not any(_close(m, o) for m in read[1][i] for o in own)  # nothing of the question's own documents
    gaps = summarise(rows)["paired"]
    assert set(gaps) == {"clara/f1_foreign"} and gaps["clara/f1_foreign"]["n"] == 2

    with pytest.raises(ValueError, match="question 'a' has 1 foreign document.*needs 2"):
        Evaluator(tiny_model, config).evaluate(SWAPPABLE)  # one foreign document each, k = 2


def test_foreign_documents_a_question_needs():
    two_golds = QUESTIONS[0].model_copy(update={"pos_index": [3, 5, 3]})
    clara = [SystemSpec(name="clara", kind="clara")]
    wrong = HarnessConfig(top_k=3, settings=["wrong_memory"], retrievers=[], systems=clara)
    assert [wrong.foreign_docs_for(q) for q in (QUESTIONS[0], two_golds)] == [1, 2]  # one per distinct gold
    assert HarnessConfig(top_k=1, settings=["wrong_memory"], retrievers=[], systems=clara).foreign_docs_for(two_golds) == 1
    foreign = HarnessConfig(top_k=3, settings=["wrong_memory", "foreign_memory"], retrievers=[], systems=clara)
    assert [foreign.foreign_docs_for(q) for q in (QUESTIONS[0], two_golds)] == [3, 3]  # k for foreign_memory


def test_answer_loss_is_stage2_ce_with_own_and_other_memory(tiny_model):
    from clara_ray.data.records import InstructRecord

    config = HarnessConfig(top_k=2, answer_loss=True, retrievers=[],
                           systems=[SystemSpec(name="clara", kind="clara", settings=[])])
    rows = Evaluator(tiny_model, config).evaluate(SWAPPABLE)
    clara_ranked = [r["retrieval"]["clara"]["ranked"] for r in rows]
    was_training = tiny_model.training
    tiny_model.eval()  # no dropout, as in evaluation
    for row, q, ranked in zip(rows, SWAPPABLE, clara_ranked):
        top = select_topk(ranked, q.pos_index, 2, oracle=True)
        own = [q.docs[j] for j in top]
        other = [q.foreign_docs[0] if j in q.pos_index else q.docs[j] for j in top]
        with torch.no_grad():
            expected = [tiny_model.instruct_loss([InstructRecord(question=q.question, docs=docs,
                                                                 answers=q.answers[:1])]).ce for docs in (own, other)]
        d = row["diagnostics"]
        assert d["answer_ce_own"] == pytest.approx(float(expected[0]), rel=1e-4)
        assert d["answer_ce_other"] == pytest.approx(float(expected[1]), rel=1e-4)
        assert d["answer_ce_own"] != pytest.approx(d["answer_ce_other"], rel=1e-4)
    tiny_model.train(was_training)
    summary = summarise(rows)
    assert summary["diagnostics"]["n"] == 2 and summary["generation"] == {}
    own_mean = sum(r["diagnostics"]["answer_ce_own"] for r in rows) / 2
    assert summary["diagnostics"]["answer_ce_own"] == pytest.approx(own_mean)
    gaps = [r["diagnostics"]["answer_ce_other"] - r["diagnostics"]["answer_ce_own"] for r in rows]
    assert summary["paired"]["answer_ce"]["mean"] == pytest.approx(sum(gaps) / 2)
    assert summary["paired"]["answer_ce"]["se"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2)  # sd / sqrt(2), n = 2
    assert "diagnostics" not in summarise([{k: v for k, v in r.items() if k != "diagnostics"} for r in rows])


def test_paired_gaps_pair_each_systems_oracle_and_wrong_memory_f1_per_question():
    from clara_ray.evaluation.harness import paired_gaps

    def row(clara, text=None):
        systems = {"clara/oracle": {"f1": clara[0]}, "clara/wrong_memory": {"f1": clara[1]}}
        if text is not None:
            systems |= {"text/oracle": {"f1": text}, "text/normal": {"f1": 0.0}}  # no wrong_memory: not paired
        return {"systems": systems}

    gaps = paired_gaps([row((1.0, 0.5), text=1.0), row((0.25, 0.5)), row((1.0, 0.0))])
    assert set(gaps) == {"clara/f1"}  # nothing else scored both ways, no answer CE measured
    assert gaps["clara/f1"]["n"] == 3 and gaps["clara/f1"]["mean"] == pytest.approx(1.25 / 3)
    rows = [row((1.0, 0.5)), row((0.5, 0.5))]
    rows[0]["systems"]["clara/foreign_memory"] = {"f1": 0.25}
    gaps = paired_gaps(rows)
    assert gaps["clara/f1_foreign"]["n"] == 1 and gaps["clara/f1_foreign"]["mean"] == pytest.approx(0.75)
    assert gaps["clara/f1"]["n"] == 2


def test_a_run_reads_memory_when_clara_answers_ranks_or_reconstructs():
    def config(systems=(), retrievers=(), reconstruction=0):
        return HarnessConfig(systems=list(systems), retrievers=list(retrievers), reconstruction=reconstruction)

    closed = SystemSpec(name="closed", kind="closed_book")  # its default retriever is never used
    assert not config([closed], ["minilm", "bm25"]).reads_memory
    assert not config([SystemSpec(name="t", kind="text_rag", retriever="minilm")]).reads_memory
    assert config([], ["clara"]).reads_memory  # the query reasoner ranks compressed documents
    assert config([SystemSpec(name="t", kind="text_rag", retriever="clara")]).reads_memory
    assert config([SystemSpec(name="clara", kind="clara")]).reads_memory
    assert config(reconstruction=4).reads_memory
