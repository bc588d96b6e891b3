"""Prompt texts (our own wording of the reference's instructions) and chat-template assembly."""
from __future__ import annotations

import random

from jinja2.exceptions import TemplateError

PRETRAIN_QA_SYSTEM = (
    "Read the background carefully. Write questions that together cover its key facts, "
    "and answer each one."
)
PARAPHRASE_SYSTEM = "Rewrite the background in your own words, keeping every fact."
ANSWER_SYSTEM = "Answer the question briefly, using the documents given as background."

# {docs} is replaced by the document slot(s).
PARAPHRASE_TEMPLATES = (
    "{docs}\nThe text above means the same as:",
    "Background: {docs}\nSay this again in other words.",
    "{docs}\nRestate the passage above.",
    "Here is a passage: {docs}\nParaphrase it.",
    "{docs}\nPut differently:",
)


def background(slots: list[str]) -> str:
    return "Background:\n" + "\n".join(slots)


def qa_turn(slot: str) -> tuple[str, str]:
    return PRETRAIN_QA_SYSTEM, background([slot])


def qa_target(questions: list[str], answers: list[str]) -> str:
    return "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in zip(questions, answers))


def paraphrase_turn(slot: str, rng: random.Random | None = None) -> tuple[str, str]:
    """Training picks a template at random; inference (rng None) uses the first."""
    template = rng.choice(PARAPHRASE_TEMPLATES) if rng else PARAPHRASE_TEMPLATES[0]
    return PARAPHRASE_SYSTEM, template.format(docs=slot)


def answer_turn(slots: list[str], question: str) -> tuple[str, str]:
    return ANSWER_SYSTEM, f"{background(slots)}\nQuestion: {question}"


def render_chat(tokenizer, system: str, user: str) -> str:
    """The backbone's chat template with a generation prompt; merge the system text into the
    user turn when the template rejects a system role, plain text when there is no template."""
    if not tokenizer.chat_template:
        return f"{system}\n\n{user}\n\nAnswer:"
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            tokenize=False, add_generation_prompt=True,
        )
    except TemplateError:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{system}\n\n{user}"}], tokenize=False, add_generation_prompt=True
        )
