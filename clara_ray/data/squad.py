"""Build the three stages' JSONL from SQuAD-format data (paragraphs with questions).

- Stage 1 (`pretrain_data.jsonl`): one record per paragraph, the paragraph with its QA pairs
  (plus a paraphrase record where a paragraph carries a non-standard `paraphrase` field, and,
  with `reconstruction`, one whose target is the paragraph itself as the compressor sees it).
- Stage 1 warm-up (`pretrain_windows.jsonl`, with `reconstruction_window` W): every W-token
  window of what the compressor reads of each paragraph, to be reconstructed from its memory.
  Short targets that every memory vector can carry are where a small generator first learns
  to read its memory (docs/results/squad-mini); a curriculum trains on them before stage 1.
  Each window's `doc_span` says where it sits in its paragraph (model.window_positions).
- Stage 2 (`instruction_data.jsonl`): one record per question, the gold paragraph among
  `instruct_docs - 1` negatives; `instruction_data_k1.jsonl`: the same questions with the gold
  paragraph alone, for a k=1 warm-up of stage 2 (the answer can only come from that memory).
- Stage 3 (`end_to_end_data.jsonl`): one record per question, the gold paragraph among
  `end_to_end_docs - 1` negatives, with `pos_index` and every distinct gold answer.
- `corpus.jsonl`: every paragraph once (`id`, `text`, `source`), a corpus for
  `pipelines.precompress`: the store a frozen compressor's stages read candidates from.

Negatives are other paragraphs: first from the same article (same topic, so they are hard to
tell apart), the rest from other articles. Articles are split whole into train and held-out, so
no held-out paragraph is seen in training. Every output is validated with the stage's record
type and written atomically.

With a `TokenWindow` (the model's tokenizer and doc_max_length), questions whose every gold
answer lies past the part of the paragraph the compressor reads are left out of training (they
cannot be answered from the memory) and counted; held-out files keep them (counted too), so an
evaluation built from them is not made easier.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from clara_ray.config import InputError
from clara_ray.data.records import parse_record, write_jsonl
from clara_ray.parsing import ParseError, parse_json, read_text

STAGE_FILES = {
    "compress_pretrain": "pretrain_data.jsonl",
    "instruct": "instruction_data.jsonl",
    "end_to_end": "end_to_end_data.jsonl",
}
WINDOWS_FILE = "pretrain_windows.jsonl"
CORPUS_FILE = "corpus.jsonl"
INSTRUCT_K1_FILE = "instruction_data_k1.jsonl"
EXTRA_FILES = {"windows": WINDOWS_FILE, "corpus": CORPUS_FILE, "instruct_k1": INSTRUCT_K1_FILE}
HELDOUT_PREFIX = "heldout_"


class SquadFormatError(InputError):
    pass


@dataclass
class Question:
    text: str
    answers: list[str]


@dataclass
class Paragraph:
    article: int
    context: str
    questions: list[Question]
    paraphrase: str | None = None


@dataclass
class BuildStats:
    files: dict[str, int] = field(default_factory=dict)  # file name -> records written
    answers_past_window: dict[str, int] = field(default_factory=dict)  # split -> questions left out


class TokenWindow:
    """What the compressor reads of a document: its first `doc_max_length` tokens."""

    def __init__(self, backbone: str, doc_max_length: int):
        from transformers import AutoTokenizer

        from clara_ray.backbones import resolve_backbone

        self.tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(backbone))
        self.doc_max_length = doc_max_length

    def cut(self, text: str) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= self.doc_max_length else self.tokenizer.decode(ids[: self.doc_max_length]).strip()

    def windows(self, text: str, size: int) -> list[tuple[str, tuple[int, int]]]:
        """Consecutive `size`-token pieces of what the compressor reads of `text` (the last may be shorter),
        each with its span: (its first token's offset, the tokens the compressor reads of `text`)."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.doc_max_length]
        pieces = ((self.tokenizer.decode(ids[i:i + size]).strip(), (i, len(ids))) for i in range(0, len(ids), size))
        return [(piece, span) for piece, span in pieces if piece]


def _distinct(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def load_squad(path: str | Path) -> list[list[Paragraph]]:
    """Articles of paragraphs; a malformed entry raises naming the file and its JSON path."""
    path = Path(path)
    try:
        raw = parse_json(read_text(path))
    except FileNotFoundError:
        raise SquadFormatError(f"{path}: file not found") from None
    except ParseError as exc:
        raise SquadFormatError(f"{path}:{exc.line}: {exc.why}" if exc.line else f"{path}: {exc.why}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise SquadFormatError(f"{path}: expected an object with a 'data' list (SQuAD format)")
    articles = []
    for a, article in enumerate(raw["data"]):
        where = f"{path}: data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise SquadFormatError(f"{where}: expected an object with a 'paragraphs' list")
        paragraphs = []
        for p, par in enumerate(article["paragraphs"]):
            if not isinstance(par, dict) or not isinstance(par.get("context"), str) or not par["context"].strip():
                raise SquadFormatError(f"{where}.paragraphs[{p}]: missing a non-empty 'context'")
            questions = []
            for q, qa in enumerate(par.get("qas") or []):
                answers = _distinct(ans.get("text", "") for ans in (qa.get("answers") or []) if isinstance(ans, dict))
                if not isinstance(qa.get("question"), str) or not qa["question"].strip():
                    raise SquadFormatError(f"{where}.paragraphs[{p}].qas[{q}]: missing 'question'")
                if answers:  # unanswerable (SQuAD 2.0) questions have nothing to train on
                    questions.append(Question(qa["question"].strip(), answers))
            paragraphs.append(Paragraph(a, par["context"].strip(), questions, par.get("paraphrase")))
        articles.append(paragraphs)
    if not articles:
        raise SquadFormatError(f"{path}: no articles")
    return articles


def _negatives(gold: Paragraph, same_article: list[Paragraph], others: list[Paragraph], count: int,
               rng: random.Random) -> list[str]:
    near = [p for p in same_article if p is not gold]
    hard = rng.sample(near, min(len(near), (count + 1) // 2))
    rest = rng.sample(others, min(len(others), count - len(hard)))
    chosen = hard + rest
    if len(chosen) < count:  # a tiny corpus: top up from whatever is left
        pool = [p for p in near if p not in hard]
        chosen += rng.sample(pool, min(len(pool), count - len(chosen)))
    if len(chosen) < count:
        raise SquadFormatError(f"only {len(chosen)} other paragraphs available, {count} negatives needed")
    return [p.context for p in chosen]


def _with_gold(gold: str, negatives: list[str], rng: random.Random) -> tuple[list[str], int]:
    docs = [gold, *negatives]
    rng.shuffle(docs)
    return docs, docs.index(gold)


def stage_records(articles: list[list[Paragraph]], instruct_docs: int, end_to_end_docs: int,
                  max_questions_per_paragraph: int, seed: int, window: TokenWindow | None = None,
                  reconstruction: bool = False, keep_past_window: bool = False,
                  reconstruction_window: int | None = None,
                  ) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The stages' records (as JSON objects, by stage; `windows`: the stage-1 warm-up's;
    `corpus`: every paragraph once) for a set of articles, and the number of questions whose
    answers lie past `window` (left out unless `keep_past_window`)."""
    if reconstruction_window and window is None:
        raise ValueError("reconstruction_window needs the model's TokenWindow (doc_max_length and tokenizer)")
    rng = random.Random(seed)
    everything = [p for article in articles for p in article]
    out: dict[str, list[dict[str, Any]]] = {stage: [] for stage in STAGE_FILES}
    if reconstruction_window:
        out["windows"] = []
    out["instruct_k1"] = []  # after the others: their shuffles, so their files, stay as before
    past_window = 0
    for article in articles:
        others = [p for p in everything if p.article != article[0].article] if article else []
        for par in article:
            seen = window.cut(par.context) if window else par.context
            if reconstruction:
                out["compress_pretrain"].append({"data_type": "paraphrase", "question": [], "answers": [seen],
                                                 "docs": [par.context]})
            if reconstruction_window:
                out["windows"] += [{"data_type": "paraphrase", "question": [], "answers": [piece], "docs": [piece],
                                    "doc_span": list(span)}
                                   for piece, span in window.windows(par.context, reconstruction_window)]
            questions = par.questions[:max_questions_per_paragraph]
            readable = [q for q in questions if any(a in seen for a in q.answers)]
            past_window += len(questions) - len(readable)
            questions = questions if keep_past_window else readable
            if questions:
                out["compress_pretrain"].append({"data_type": "qa", "question": [q.text for q in questions],
                                                 "answers": [q.answers[0] for q in questions], "docs": [par.context]})
            if par.paraphrase:
                out["compress_pretrain"].append({"data_type": "paraphrase", "question": [],
                                                 "answers": [par.paraphrase], "docs": [par.context]})
            for q in questions:
                docs, _ = _with_gold(par.context, _negatives(par, article, others, instruct_docs - 1, rng), rng)
                out["instruct"].append({"question": q.text, "docs": docs, "answer": q.answers[0]})
                out["instruct_k1"].append({"question": q.text, "docs": [par.context], "answer": q.answers[0]})
                docs, gold = _with_gold(par.context, _negatives(par, article, others, end_to_end_docs - 1, rng), rng)
                out["end_to_end"].append({"question": q.text, "docs": docs, "answers": q.answers, "pos_index": [gold]})
    # Shortest first: the precompress job batches neighbouring records, so similar lengths pad less.
    out["corpus"] = sorted(({"id": f"squad-{par.article}-{i}", "text": par.context, "source": f"squad article {par.article}"}
                            for i, par in enumerate(everything)), key=lambda record: len(record["text"]))
    for name, records in out.items():
        if name == "corpus":
            continue
        rng.shuffle(records)
        stage = {"windows": "compress_pretrain", "instruct_k1": "instruct"}.get(name, name)
        for i, record in enumerate(records):
            parse_record(record, stage, f"<built {name}>", i + 1)  # a builder bug must not ship bad data
    return out, past_window


def build_squad_data(squad_path: str | Path, out_dir: str | Path, train_articles: int | None = None,
                     instruct_docs: int = 5, end_to_end_docs: int = 20, max_questions_per_paragraph: int = 5,
                     seed: int = 0, window: TokenWindow | None = None, reconstruction: bool = False,
                     reconstruction_window: int | None = None, use_train_articles: int | None = None) -> BuildStats:
    """Write the stage files for the first `train_articles` articles, and held-out files for the rest.
    `use_train_articles`: build the training files from only the first N of those (a smaller
    corpus for a short run); the held-out split is unchanged."""
    articles = load_squad(squad_path)
    cut = len(articles) if train_articles is None else train_articles
    if not 0 < cut <= len(articles):
        raise SquadFormatError(f"train_articles={train_articles} but {squad_path} has {len(articles)} articles")
    out_dir = Path(out_dir)
    stats = BuildStats()
    splits = [("", articles[:cut][:use_train_articles])] + ([(HELDOUT_PREFIX, articles[cut:])] if cut < len(articles) else [])
    for prefix, split in splits:
        records_by_stage, stats.answers_past_window[prefix or "train"] = stage_records(
            split, instruct_docs, end_to_end_docs, max_questions_per_paragraph, seed, window, reconstruction,
            keep_past_window=bool(prefix), reconstruction_window=reconstruction_window)
        for stage, records in records_by_stage.items():
            name = prefix + (EXTRA_FILES.get(stage) or STAGE_FILES[stage])
            write_jsonl(out_dir / name, records)
            stats.files[name] = len(records)
    return stats
