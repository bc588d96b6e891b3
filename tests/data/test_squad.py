"""SQuAD-format data -> the three stages' JSONL (article split, mined negatives, pos_index)."""
from __future__ import annotations

import json

import pytest

from clara_ray.data.records import read_records
from clara_ray.data.squad import SquadFormatError, build_squad_data


def _squad(tmp_path, articles=3, paragraphs=3):
    data = []
    for a in range(articles):
        pars = []
        for p in range(paragraphs):
            context = f"Article {a} paragraph {p}: the answer is word{a}{p} in this text."
            pars.append({"context": context, "qas": [
                {"id": f"{a}-{p}-{q}", "question": f"What is asked {q} about {a}/{p}?",
                 "answers": [{"text": f"word{a}{p}", "answer_start": context.index("word")},
                             {"text": f"word{a}{p}", "answer_start": context.index("word")}]}
                for q in range(2)]})
        pars[0]["paraphrase"] = f"In short: article {a} opens with word{a}0."
        data.append({"title": f"A{a}", "paragraphs": pars})
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def test_builds_valid_stage_files_split_by_article(tmp_path):
    stats = build_squad_data(_squad(tmp_path, articles=4), tmp_path / "out", train_articles=2, instruct_docs=3,
                             end_to_end_docs=5)
    out = tmp_path / "out"
    pre, ins, e2e = (read_records(out / n, s) for n, s in (
        ("pretrain_data.jsonl", "compress_pretrain"), ("instruction_data.jsonl", "instruct"),
        ("end_to_end_data.jsonl", "end_to_end")))
    assert len(pre) == 2 * 3 + 2  # one QA record per paragraph + the paraphrase records
    assert len(ins) == len(e2e) == 2 * 3 * 2
    assert stats.files["heldout_end_to_end_data.jsonl"] == 2 * 3 * 2
    assert {r.data_type for r in pre} == {"qa", "paraphrase"}
    for r in e2e:
        assert len(r.docs) == 5 and len(set(r.docs)) == 5
        gold = r.docs[r.pos_index[0]]
        assert r.answers == [gold.split("answer is ")[1].split(" ")[0]]  # duplicates folded
    for r in ins:
        assert len(r.docs) == 3 and sum(r.answer in d for d in r.docs) == 1
    # the k=1 file: the same questions, each with its gold paragraph alone
    k1 = read_records(out / "instruction_data_k1.jsonl", "instruct")
    gold = {r.question: next(d for d in r.docs if r.answer in d) for r in ins}
    assert sorted(r.question for r in k1) == sorted(gold)
    assert all(r.docs == [gold[r.question]] for r in k1)
    # no paragraph of the held-out article leaks into training
    held = {d for r in read_records(out / "heldout_end_to_end_data.jsonl", "end_to_end") for d in r.docs}
    trained = {d for r in e2e for d in r.docs}
    assert held and not held & trained
    assert all(d.startswith(("Article 2", "Article 3")) for d in held)
    # each split's corpus holds every paragraph its records read, once, for a precompressed store
    for prefix, docs in (("", trained | {d for r in ins for d in r.docs}), ("heldout_", held)):
        corpus = [json.loads(line) for line in (out / f"{prefix}corpus.jsonl").open()]
        assert len(corpus) == len({c["id"] for c in corpus}) == len({c["text"] for c in corpus}) == 2 * 3
        assert {c["text"] for c in corpus} == docs


def test_a_short_run_trains_on_the_first_articles_and_keeps_the_held_out_split(tmp_path):
    stats = build_squad_data(_squad(tmp_path, articles=4), tmp_path / "out", train_articles=3, instruct_docs=2,
                             end_to_end_docs=3, use_train_articles=2)
    trained = {d.split(" ")[1] for r in read_records(tmp_path / "out" / "end_to_end_data.jsonl", "end_to_end")
               for d in r.docs}
    assert trained == {"0", "1"}
    assert stats.files["heldout_end_to_end_data.jsonl"] == 3 * 2  # article 3 alone, as without the limit


def test_negatives_prefer_the_same_article(tmp_path):
    build_squad_data(_squad(tmp_path, articles=3, paragraphs=4), tmp_path / "out", instruct_docs=3, end_to_end_docs=5)
    for r in read_records(tmp_path / "out" / "end_to_end_data.jsonl", "end_to_end"):
        article = r.docs[r.pos_index[0]].split(" ")[1]
        same = sum(d.split(" ")[1] == article for d in r.docs) - 1
        assert same == 2  # half of the 4 negatives are hard ones from the gold's own article


def test_malformed_squad_names_the_entry(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "ok", "qas": []}, {"qas": []}]}]}))
    with pytest.raises(SquadFormatError, match=r"bad\.json: data\[0\]\.paragraphs\[1\]: missing a non-empty 'context'"):
        build_squad_data(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_utf8_json_is_named(tmp_path):
    for name, content, message in (("latin1.json", b'{"data": [\n"\xe9"]}', r"latin1\.json:2: not UTF-8 text"),
                                   ("deep.json", b"[" * 100_000 + b"]" * 100_000, r"deep\.json: invalid JSON: nested")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SquadFormatError, match=message):
            build_squad_data(tmp_path / name, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_too_few_paragraphs_for_the_negatives_is_an_error(tmp_path):
    with pytest.raises(SquadFormatError, match="negatives needed"):
        build_squad_data(_squad(tmp_path, articles=1, paragraphs=3), tmp_path / "out", end_to_end_docs=20)


def test_cli_writes_the_files(tmp_path):
    import typer
    from typer.testing import CliRunner

    from pipelines.build_squad_data import main

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--squad", str(_squad(tmp_path)), "--out", str(tmp_path / "o"),
                                      "--end-to-end-docs", "4"])
    assert result.exit_code == 0, result.output
    assert "end_to_end_data.jsonl: 18 records" in result.output


def test_reconstruction_records_and_answers_past_the_window(tmp_path):
    from clara_ray.data.squad import TokenWindow

    path = tmp_path / "squad.json"
    filler = " ".join(f"filler{i}" for i in range(60))
    data = [{"title": f"A{a}", "paragraphs": [
        {"context": f"Early fact: the key is early{a}{p}. {filler} Late fact: the lock is late{a}{p}.",
         "qas": [{"id": f"{a}{p}e", "question": "Which key?", "answers": [{"text": f"early{a}{p}", "answer_start": 0}]},
                 {"id": f"{a}{p}l", "question": "Which lock?", "answers": [{"text": f"late{a}{p}", "answer_start": 0}]}]}
        for p in range(3)]} for a in range(3)]
    path.write_text(json.dumps({"data": data}))
    window = TokenWindow("tiny-random", 24)
    stats = build_squad_data(path, tmp_path / "out", train_articles=2, instruct_docs=2, end_to_end_docs=3,
                             window=window, reconstruction=True)
    pre = read_records(tmp_path / "out" / "pretrain_data.jsonl", "compress_pretrain")
    rebuilt = [r for r in pre if r.data_type == "paraphrase"]
    assert len(rebuilt) == 2 * 3  # one per training paragraph
    for r in rebuilt:
        target = r.answers[0]
        assert r.docs[0].startswith(target) and len(window.tokenizer(target)["input_ids"]) <= 24
        assert "Late fact" not in target
    # the late answers cannot be read from a 24-token window: left out of training, kept held out
    assert stats.answers_past_window == {"train": 2 * 3, "heldout_": 3}
    ins = read_records(tmp_path / "out" / "instruction_data.jsonl", "instruct")
    assert ins and all(r.answer.startswith("early") for r in ins)
    held = read_records(tmp_path / "out" / "heldout_instruction_data.jsonl", "instruct")
    assert {r.answer[:4] for r in held} == {"earl", "late"}


def test_reconstruction_windows_cover_what_the_compressor_reads(tmp_path):
    from clara_ray.data.squad import TokenWindow

    path = tmp_path / "squad.json"
    data = [{"title": f"A{a}", "paragraphs": [
        {"context": " ".join(f"w{a}{p}x{i}" for i in range(40)),
         "qas": [{"id": f"{a}{p}", "question": "Q?", "answers": [{"text": f"w{a}{p}x0", "answer_start": 0}]}]}
        for p in range(3)]} for a in range(3)]
    path.write_text(json.dumps({"data": data}))
    window = TokenWindow("tiny-random", 40)
    build_squad_data(path, tmp_path / "out", train_articles=2, instruct_docs=2, end_to_end_docs=3,
                     window=window, reconstruction=True, reconstruction_window=16)
    pieces = read_records(tmp_path / "out" / "pretrain_windows.jsonl", "compress_pretrain")
    held = read_records(tmp_path / "out" / "heldout_pretrain_windows.jsonl", "compress_pretrain")
    assert (len(pieces), len(held)) == (6 * 3, 3 * 3)  # 40 tokens read -> 16 + 16 + 8 per paragraph
    squash = lambda text: text.replace(" ", "")
    seen = {(a, p): squash(window.cut(par["context"]))
            for a, article in enumerate(data) for p, par in enumerate(article["paragraphs"])}
    for records, articles in ((pieces, {0, 1}), (held, {2})):
        for r in records:
            assert r.data_type == "paraphrase" and r.answers == r.docs
            assert len(window.tokenizer(r.docs[0], add_special_tokens=False)["input_ids"]) <= 17
            owners = [key for key, text in seen.items() if squash(r.docs[0]) in text]
            assert len(owners) == 1 and owners[0][0] in articles  # one paragraph's, of its own split
            (a, p), = owners  # where it sits in that paragraph, for model.window_positions: document
            ids = window.tokenizer(data[a]["paragraphs"][p]["context"], add_special_tokens=False)["input_ids"][:40]
            offset, length = r.doc_span
            assert length == 40 and squash(window.tokenizer.decode(ids[offset:offset + 16])) == squash(r.docs[0])
