"""The LoRA text-RAG baseline: the same backbone's `generator` adapter fine-tuned to answer from
documents given as *text*, on the same stage-2 records CLaRa's generator learns from.

    python -m experiments.text_rag_lora --data runs/repro/data/instruction_data.jsonl \
        --out runs/repro/text_rag_lora --backbone smollm2-135m --steps 100

The result is a CLaRa checkpoint directory whose generator reads text: evaluate it with a
`text_rag` system with `adapter: generator`. Plain PyTorch on one process (a baseline, not the
product); the output directory appears whole (temp dir + rename), so a rerun after a crash
starts over and a finished run is skipped.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

TEXT_STAGE = "text_rag_lora"  # recorded as the generator's trainer in the saved config


def text_rag_loss(model, records):
    """CE on the answer given the question and its documents as text (labels -100 on the prompt)."""
    from clara_ray.model import prompts

    # Same prompt as `generate_from_text`, so training and evaluation agree. `_generator_batch`
    # is the model's own prompt + target tokenisation; there is no public text-training call.
    batch = model._generator_batch([prompts.answer_turn(list(r.docs), r.question) for r in records],
                                   [r.answer for r in records])
    with model.adapter("generator"):
        out = model.language_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                   position_ids=batch.position_ids, labels=batch.labels)
    return out.loss


def train_text_rag_lora(data: Path, out: Path, backbone: str, steps: int, batch_size: int = 4, lr: float = 1e-4,
                        max_docs: int = 5, seed: int = 0, log_every: int = 10) -> list[float]:
    import torch

    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.data.records import read_records

    records = read_records(data, "instruct")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = CLaRa.from_config(CLaRaConfig(backbone=backbone), device="cpu")
    params = model.adapter_parameters("generator")
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    model.train()
    losses = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        batch = [r.model_copy(update={"docs": r.docs[:max_docs]}) for r in rng.sample(records, batch_size)]
        optimizer.zero_grad()
        # One record per forward: five SQuAD paragraphs as text are ~1,000 tokens, and a batch of
        # four in one forward+backward (logits over 49k tokens, attention saved for backward)
        # was killed for memory at 24 GB.
        loss = torch.zeros(())
        for record in batch:
            part = text_rag_loss(model, [record]) / len(batch)
            part.backward()
            loss += part.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            typer.echo(f"step {step}/{steps} loss {loss:.4f} ({time.perf_counter() - start:.0f}s)")
    model.eval()
    model.config.trained["generator"] = TEXT_STAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    model.save_pretrained(staging)
    (staging / "text_rag_lora.json").write_text(json.dumps({"data": str(data), "steps": steps, "losses": losses}))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return losses


def main(
    data: Annotated[Path, typer.Option(help="stage-2 JSONL (question, docs, answer)")],
    out: Annotated[Path, typer.Option(help="output checkpoint directory")],
    backbone: Annotated[str, typer.Option()] = "smollm2-135m",
    steps: Annotated[int, typer.Option(min=1)] = 100,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option()] = 1e-4,
) -> None:
    """Fine-tune the text-RAG LoRA baseline; skipped when `out` already holds a finished run."""
    if (out / "text_rag_lora.json").exists():
        typer.echo(f"{out}: already trained, skipped")
        return
    train_text_rag_lora(data, out, backbone, steps, batch_size, lr)
    typer.echo(f"saved {out}")


if __name__ == "__main__":
    typer.run(main)
