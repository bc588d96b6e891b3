"""Synthesis: per chunk a dense summary and 3-5 verified QA pairs, via an OpenAI-compatible model.

Each prompt starts with a `TASK:` line so that logs (and the tests' scripted server) can tell
the three calls apart: generate, verify, regenerate.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from clara_ray.ingest.config import ApiConfig, SynthesisConfig
from clara_ray.ingest.failures import guarded_row
from clara_ray.ingest.openai_client import ApiCallError, ChatClient
from clara_ray.ingest.storage import to_columns

SYSTEM = ("You create training data for a retrieval-augmented question answering model. "
          "Use only facts stated in the passage. Reply with one JSON object and nothing else.")


# Length bounds are part of the schema sent as response_format: they keep a rambling model's reply
# finite (the embedded LLM decodes under this schema) and reject runaway text from any model.
class QAPair(BaseModel):
    question: str = Field(min_length=3, max_length=200)
    answer: str = Field(min_length=1, max_length=200)
    type: Literal["factual", "reasoning"]
    language: str = "en"


class Generated(BaseModel):
    summary: str = Field(min_length=10, max_length=800)
    qa_pairs: list[QAPair] = Field(max_length=12)


def _bounded(model: type[BaseModel], name: str, **schema_bounds: int) -> tuple[Any, Any]:
    """Field `name` of `model` with extra bounds in its JSON schema only; validation keeps the
    field's own limits, so a model that ignores the schema is not re-asked over them."""
    field = copy.copy(model.model_fields[name])
    field.json_schema_extra = schema_bounds
    return field.annotation, field


@lru_cache(maxsize=None)
def reply_schema(model: type[BaseModel], min_pairs: int, max_pairs: int, question_chars: int, answer_chars: int,
                 summary_chars: int) -> type[BaseModel]:
    """`model` whose JSON schema asks for `min_pairs`..`max_pairs` qa_pairs and the given string lengths.
    The bounds travel in the response_format, so a schema-enforcing server stops there instead of
    running on to its token limit (and a truncated, unparseable reply). Extra pairs from a model
    that ignores the bound are cut by the caller, not re-requested."""
    pair = create_model("QAPair", __base__=QAPair, question=_bounded(QAPair, "question", maxLength=question_chars),
                        answer=_bounded(QAPair, "answer", maxLength=answer_chars))
    fields: dict[str, Any] = {"qa_pairs": (list[pair], Field(json_schema_extra={"minItems": min_pairs, "maxItems": max_pairs}))}
    if "summary" in model.model_fields:
        fields["summary"] = _bounded(model, "summary", maxLength=summary_chars)
    return create_model(model.__name__, __base__=model, **fields)


def _reply_schema(model: type[BaseModel], min_pairs: int, max_pairs: int, cfg: SynthesisConfig) -> type[BaseModel]:
    return reply_schema(model, min_pairs, max_pairs, cfg.question_max_chars, cfg.answer_max_chars, cfg.summary_max_chars)


class Verdict(BaseModel):
    index: int
    supported: bool


class Verdicts(BaseModel):
    verdicts: list[Verdict]


@lru_cache(maxsize=None)
def verdicts_for(count: int) -> type[Verdicts]:
    """Verdicts whose schema asks for exactly one verdict per pair (an unbounded list lets a small
    model run on to the token limit)."""
    return create_model("Verdicts", __base__=Verdicts,
                        verdicts=(list[Verdict], Field(json_schema_extra={"minItems": count, "maxItems": count})))


class NewPairs(BaseModel):
    qa_pairs: list[QAPair]


def _language_rules(cfg: SynthesisConfig) -> str:
    main, others = cfg.languages[0], cfg.languages[1:]
    rules = [f'Write questions and answers in language "{main}" unless told otherwise.']
    for lang in others:
        rules.append(f'Add one pair with both question and answer in language "{lang}" (set "language": "{lang}").')
    if cfg.cross_lingual and others:
        rules.append(f'Add one pair whose question is in "{others[0]}" and whose answer is in "{main}" '
                     f'(set "language": "{others[0]}-{main}").')
    return " ".join(rules)


def generate_messages(chunk: str, cfg: SynthesisConfig) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        "TASK: generate\n"
        f"Write a dense summary of the passage that keeps every fact, then {cfg.min_qa} to {cfg.max_qa} "
        "question-answer pairs answerable from the passage alone: at least one 'factual' (a fact stated "
        "in one place) and at least one 'reasoning' (needs combining or inferring from several "
        f"statements). Keep answers short. {_language_rules(cfg)}\n"
        'JSON shape: {"summary": str, "qa_pairs": [{"question": str, "answer": str, '
        '"type": "factual"|"reasoning", "language": str}]}\n'
        f"PASSAGE:\n{chunk}")}]


def verify_messages(chunk: str, pairs: list[QAPair]) -> list[dict]:
    listing = "\n".join(f"{i}. Q: {p.question}\n   A: {p.answer}" for i, p in enumerate(pairs))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        "TASK: verify\n"
        "For each numbered pair, decide whether the passage fully supports the answer to the question.\n"
        'JSON shape: {"verdicts": [{"index": int, "supported": bool}]}\n'
        f"PASSAGE:\n{chunk}\nPAIRS:\n{listing}")}]


def regenerate_messages(chunk: str, count: int, types: list[str], avoid: list[str],
                        cfg: SynthesisConfig) -> list[dict]:
    avoid_list = "\n".join(f"- {q}" for q in avoid)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": (
        "TASK: regenerate\n"
        f"Write {count} new question-answer pairs answerable from the passage alone, of types "
        f"{', '.join(types)} (in that order). Do not repeat these questions:\n{avoid_list}\n"
        f"{_language_rules(cfg)}\n"
        'JSON shape: {"qa_pairs": [{"question": str, "answer": str, "type": "factual"|"reasoning", '
        '"language": str}]}\n'
        f"PASSAGE:\n{chunk}")}]


REQUIRED_TYPES = {"factual", "reasoning"}


def _check_generated(cfg: SynthesisConfig):
    # A missing pair type is not a reason to throw the reply away (re-asking a greedy model
    # returns the same reply): the regeneration round asks for the missing type instead.
    def check(value: Generated) -> None:
        if len(value.qa_pairs) < cfg.min_qa:
            raise ValueError(f"qa_pairs: {len(value.qa_pairs)} pairs, expected {cfg.min_qa}-{cfg.max_qa}")
    return check


def _check_count(count: int):
    def check(value: NewPairs) -> None:
        if len(value.qa_pairs) < count:
            raise ValueError(f"qa_pairs: {len(value.qa_pairs)} pairs, expected {count}")
    return check


def _missing_types(accepted: list[QAPair], count: int) -> list[str]:
    """Types to ask for: the required kinds not yet accepted first, then factual."""
    have = {p.type for p in accepted}
    wanted = [t for t in sorted(REQUIRED_TYPES) if t not in have]
    return (wanted + ["factual"] * count)[:count]


def synthesize_chunk(client: ChatClient, chunk: str, cfg: SynthesisConfig) -> dict[str, Any]:
    """Summary + verified pairs; raises ApiCallError when nothing usable comes back."""
    generated = client.complete_json(generate_messages(chunk, cfg), _reply_schema(Generated, cfg.min_qa, cfg.max_qa, cfg),
                                     check=_check_generated(cfg))
    candidates, accepted, rejected = generated.qa_pairs[:cfg.max_qa], [], []
    rounds = 0
    while True:
        verdicts = client.complete_json(verify_messages(chunk, candidates), verdicts_for(len(candidates)))
        ok = {v.index for v in verdicts.verdicts if v.supported}
        for i, pair in enumerate(candidates):
            (accepted if i in ok else rejected).append(pair)
        missing_type = not REQUIRED_TYPES <= {p.type for p in accepted}
        need = min(len(candidates) - len(ok) + missing_type, cfg.max_qa - len(accepted))
        if need <= 0 or rounds >= cfg.verify_rounds:
            break
        rounds += 1
        try:
            candidates = client.complete_json(
                regenerate_messages(chunk, need, _missing_types(accepted, need),
                                    [p.question for p in accepted + rejected], cfg),
                _reply_schema(NewPairs, need, need, cfg), check=_check_count(need)).qa_pairs[:need]
        except ApiCallError:
            break  # keep what was verified so far
    if not accepted:
        raise ApiCallError("verification_failed",
                           f"no QA pair passed verification after {rounds} regeneration round(s)")
    return {"summary": generated.summary.strip(), "qa": [p.model_dump() for p in accepted],
            "rounds": rounds, "rejected": len(rejected)}


class Synthesizer:
    """Ray Data actor holding one API client."""

    def __init__(self, api: dict, cfg: dict):
        self.api = ApiConfig.model_validate(api)
        self.cfg = SynthesisConfig.model_validate(cfg)
        self.client = ChatClient(self.api, self.api.text_model, self.cfg.workers)

    @staticmethod
    def empty_row(key: str) -> dict[str, Any]:
        return {"key": key, "status": "ok", "summary": "", "qa": "[]", "rounds": 0, "rejected": 0,
                "error_kind": "", "error": ""}

    def _synthesize(self, text: str) -> dict[str, Any]:
        result = synthesize_chunk(self.client, text, self.cfg)
        return {"summary": result["summary"], "qa": json.dumps(result["qa"], ensure_ascii=False),
                "rounds": result["rounds"], "rejected": result["rejected"]}

    def _one(self, key: str, text: str) -> dict[str, Any]:
        return guarded_row(self.empty_row(key), lambda: self._synthesize(text))

    def __call__(self, batch: dict) -> dict:
        rows = [self._one(k, t) for k, t in zip(batch["key"], batch["text"])]
        return to_columns(rows)
