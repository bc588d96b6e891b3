"""The Ray Data evaluation run on the tiny model: outputs, summary, resume after a crash."""
import json
from pathlib import Path

import pytest

from clara_ray.evaluation.config import EvalConfig
from clara_ray.evaluation.harness import HarnessConfig
from clara_ray.evaluation.run import PARTIAL, RECONSTRUCTIONS, run_evaluation
from clara_ray.model.configuration import CheckpointError

DOCS = ["Ada Lovelace wrote the first published program.", "Mount Everest is the highest mountain.",
        "The Nile flows north into the Mediterranean.", "Copper conducts electricity well."]
ROWS = [
    {"id": "q1", "question": "Who wrote the first published program?", "golden_answers": ["Ada Lovelace"],
     "docs": DOCS, "pos_index": [0]},
    {"id": "q2", "question": "Which mountain is the highest?", "answers": ["Mount Everest", "Everest"],
     "docs": DOCS, "pos_index": [1]},
    {"id": "q3", "question": "Where does the Nile flow?", "answer": "the Mediterranean", "docs": DOCS[::-1],
     "pos_index": [1]},
]


@pytest.fixture
def eval_config(tmp_path, tiny_model):
    checkpoint = tmp_path / "ckpt"
    tiny_model.save_pretrained(checkpoint)
    data = tmp_path / "nq.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return EvalConfig.model_validate({
        "checkpoint": str(checkpoint), "output_dir": str(tmp_path / "out"),
        "data": {"format": "jsonl", "path": str(data)},
        "harness": {"top_k": 2, "max_new_tokens": 3, "retrievers": ["clara", "bm25"],
                    "systems": [{"name": "clara", "kind": "clara"}, {"name": "closed", "kind": "closed_book"}]},
        "ray": {"actors": 1, "num_cpus": 0.5, "batch_size": 2},
    })


@pytest.mark.slow
def test_run_writes_predictions_summary_report_and_resumes(ray_cluster, eval_config):
    out = eval_config.output_dir
    summary = run_evaluation(eval_config)
    rows = [json.loads(line) for line in open(f"{out}/predictions.jsonl")]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]  # question order, whatever the batch order
    assert summary["num_questions"] == 3 and summary["compression_rate"] == 8 and summary["label"] == "CR=8"
    assert set(summary["generation"]) == {"clara/normal", "clara/oracle", "closed/closed"}
    recall = sum(r["retrieval"]["bm25"]["recall@1"] for r in rows) / 3
    assert summary["retrieval"]["bm25"]["recall@1"] == pytest.approx(recall)
    assert json.load(open(f"{out}/summary.json"))["retrieval"] == summary["retrieval"]
    assert "| CR=8 | clara | oracle | 3 |" in open(f"{out}/report.md").read()
    with open(f"{out}/recall_at_k.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

    # a crash after q1's batch: the partial file holds q1 and a torn line, no final outputs
    marked = dict(rows[0], systems={**rows[0]["systems"], "clara/normal": {**rows[0]["systems"]["clara/normal"],
                                                                          "prediction": "FROM-PARTIAL"}})
    out_dir = Path(out)
    out_dir.joinpath(PARTIAL).write_text(json.dumps(marked) + "\n{\"id\": \"q2\", \"ret")
    out_dir.joinpath("predictions.jsonl").unlink()
    resumed = run_evaluation(eval_config)
    rows = [json.loads(line) for line in open(f"{out}/predictions.jsonl")]
    assert rows[0]["systems"]["clara/normal"]["prediction"] == "FROM-PARTIAL"  # reused, not recomputed
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"] and resumed["num_questions"] == 3
    assert not out_dir.joinpath(PARTIAL).exists()

    # a finished run scored before answer positions were kept: a rerun adds them, scoring nothing again
    assert [r["answer_word"] for r in rows] == [0, 0, 4]  # "the Mediterranean" after "nile flows north into"
    old = [{k: v for k, v in r.items() if k != "answer_word"} for r in rows]
    out_dir.joinpath("predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    summary = run_evaluation(eval_config)
    rows = [json.loads(line) for line in open(f"{out}/predictions.jsonl")]
    assert [r["answer_word"] for r in rows] == [0, 0, 4]
    assert rows[0]["systems"]["clara/normal"]["prediction"] == "FROM-PARTIAL"  # kept, not scored again
    assert [(g["words"], g["n"]) for g in summary["by_answer_position"]] == [("0-29", 3)]
    assert "| CR=8 | 0-29 | 3 |" in open(f"{out}/report.md").read()


@pytest.mark.slow
def test_reconstruction_only_evaluation_of_a_stage1_checkpoint(ray_cluster, eval_config, tiny_model):
    """No systems, no retrievers: the held-out gold paragraphs are reconstructed, scored, reported."""
    from clara_ray.evaluation.diagnostics import reconstruct

    cfg = eval_config.model_copy(update={"harness": HarnessConfig(systems=[], retrievers=[], reconstruction=2)})
    summary = run_evaluation(cfg)
    recon = summary["diagnostics"]["reconstruction"]
    assert (summary["generation"], summary["retrieval"], recon["n"]) == ({}, {}, 2)
    expected = reconstruct(tiny_model, DOCS[:2], batch_size=cfg.ray.batch_size)  # q1's and q2's gold paragraphs
    path = Path(cfg.output_dir) / RECONSTRUCTIONS
    assert [json.loads(line) for line in path.read_text().splitlines()] == expected
    assert recon["rouge_l_f1_mean"] == pytest.approx(sum(e["rouge_l_f1"] for e in expected) / 2)
    report = open(f"{cfg.output_dir}/report.md").read()
    assert f"| CR=8 | - | - | - | - | - | - | - | - | {100 * recon['rouge_l_f1_mean']:.2f} |" in report

    # a rerun reads the reconstructions back instead of generating again
    path.write_text("".join(json.dumps({**e, "rouge_l_f1": 1.0}) + "\n" for e in expected))
    assert run_evaluation(cfg)["diagnostics"]["reconstruction"]["rouge_l_f1_mean"] == 1.0


def test_output_dir_of_another_evaluation_is_refused(eval_config):
    from pathlib import Path

    Path(eval_config.output_dir).mkdir(parents=True)
    Path(eval_config.output_dir, "run_config.json").write_text('{"checkpoint": "other"}')
    with pytest.raises(ValueError, match="holds results of a different evaluation"):
        run_evaluation(eval_config)


def test_wrong_memory_without_foreign_document_fails_before_scoring(tmp_path, eval_config):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")  # no other question: no foreign gold document
    cfg = EvalConfig.model_validate({**eval_config.model_dump(), "data": {"format": "jsonl", "path": str(data)},
                                     "harness": {**eval_config.harness.model_dump(), "settings": ["wrong_memory"]}})
    with pytest.raises(ValueError, match="question 'q1' has 0 foreign document"):
        run_evaluation(cfg)
    assert not Path(cfg.output_dir, PARTIAL).exists()


def test_foreign_memory_asks_the_loader_for_top_k_foreign_documents(tmp_path, eval_config):
    from clara_ray.evaluation.run import questions_for

    rows = [{"id": "a", "question": "Who?", "answers": ["Ada"], "docs": DOCS[:2], "pos_index": [0]},
            {"id": "b", "question": "Where?", "answers": ["north"], "docs": DOCS[2:], "pos_index": [0]}]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def config(settings):
        return EvalConfig.model_validate({**eval_config.model_dump(), "data": {"format": "jsonl", "path": str(data)},
                                          "harness": {**eval_config.harness.model_dump(), "settings": settings}})

    a, b = questions_for(config(["wrong_memory"]))  # one foreign gold document each: enough
    assert a.foreign_docs == [DOCS[2]] and b.foreign_docs == [DOCS[0]]
    with pytest.raises(ValueError, match="question 'a' has 1 foreign document.*needs 2"):
        questions_for(config(["foreign_memory"]))  # top_k = 2 foreign documents each


def test_a_run_name_that_would_break_the_report_tables_is_refused():
    from clara_ray.config import ConfigError, load_config

    base = ["checkpoint=ckpt", "output_dir=out", "data.format=jsonl", "data.path=x.jsonl"]
    assert load_config(EvalConfig, None, [*base, "label=CR 16 long run"]).label == "CR 16 long run"
    for label, why in (("CR | 16", "holds '|' or a line break"), ("' '", "is blank"), ('"a\\nb"', "holds '|'")):
        with pytest.raises(ConfigError, match=rf"label: .*the run name {why}"):
            load_config(EvalConfig, None, [*base, f"label={label}"])
    with pytest.raises(ValueError, match="the run name contains a lone surrogate"):  # e.g. spelled by a JSON escape
        EvalConfig.model_validate({"checkpoint": "c", "output_dir": "o", "label": "CR \udcff",
                                   "data": {"format": "jsonl", "path": "x.jsonl"}})


def test_article_range_and_bad_checkpoint(tmp_path, eval_config):
    cfg = EvalConfig.model_validate({**eval_config.model_dump(), "data": {
        "format": "squad", "path": "x.json", "article_range": [3, 6]}})
    assert cfg.data.article_indices == [3, 4, 5]
    assert EvalConfig.model_validate_json(cfg.model_dump_json()) == cfg  # travels to the Ray actors intact
    with pytest.raises(CheckpointError, match="nowhere is not a CLaRa checkpoint"):
        run_evaluation(cfg.model_copy(update={"checkpoint": str(tmp_path / "nowhere")}))


def test_actor_with_store_takes_candidates_from_the_store(tmp_path, eval_config, tiny_model):
    """Store mode: candidates are the store's top-n for each question, gold matched by text."""
    import numpy as np

    from clara_ray.evaluation.run import EvalActor
    from clara_ray.store import DocRecord, StoreWriter, checkpoint_identity

    store = tmp_path / "store"
    corpus = DOCS + ["Bananas are berries.", "Glass is an amorphous solid."]
    with StoreWriter(store, checkpoint_identity(eval_config.checkpoint, tiny_model)) as writer:
        writer.add(tiny_model.compress_documents(corpus).numpy(), [DocRecord(id=f"d{i}", text=t) for i, t in enumerate(corpus)])
        writer.publish()
    cfg = eval_config.model_copy(update={"store": str(store), "store_candidates": 3})
    actor = EvalActor(cfg.model_dump_json())
    questions = [json.dumps({"id": r["id"], "dataset": "nq", "question": r["question"], "answers": ["x"],
                             "docs": r["docs"], "pos_index": r["pos_index"]}) for r in ROWS[:2]]
    rows = [json.loads(r) for r in actor({"question": np.array(questions)})["row"]]

    queries = tiny_model.retrieval_vectors(tiny_model.encode_queries([r["question"] for r in ROWS[:2]])).numpy()
    documents = tiny_model.retrieval_vectors(tiny_model.compress_documents(corpus)).numpy()
    for row, source, q in zip(rows, ROWS, queries):
        top3 = [corpus[i] for i in np.argsort(-(documents @ q))[:3]]
        assert row["num_candidates"] == 3
        gold_text = source["docs"][source["pos_index"][0]]
        assert row["pos_index"] == ([top3.index(gold_text)] if gold_text in top3 else [])
        # CLaRa's ranking over the store's candidates keeps the store's order (same vectors, same score)
        assert row["retrieval"]["clara"]["ranked"] == [0, 1, 2]


def test_a_question_the_model_fails_on_fails_alone_and_is_named(eval_config):
    """A memory-token name in a question gives its prompt one slot too many: generation raises
    for the whole batch, then for that question alone."""
    import numpy as np

    from clara_ray.evaluation.run import EvalActor

    texts = ["Who wrote the first published program?", "What is <MEM0>?", "Which mountain is the highest?"]
    questions = [json.dumps({"id": f"q{i}", "dataset": "nq", "question": t, "answers": ["x"], "docs": DOCS,
                             "pos_index": [0]}) for i, t in enumerate(texts)]
    rows = [json.loads(r) for r in EvalActor(eval_config.model_dump_json())({"question": np.array(questions)})["row"]]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
    assert "systems" in rows[0] and "systems" in rows[2] and "error" not in rows[0]
    assert rows[1] == {"id": "q1", "error": rows[1]["error"]}
    assert rows[1]["error"].startswith("question 'q1': ValueError: prompt has")
