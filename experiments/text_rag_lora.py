"""The LoRA text-RAG baseline: the same backbone's `generator` adapter fine-tuned to answer from
documents given as *text*, on the same stage-2 records CLaRa's generator learns from.

    python -m experiments.text_rag_lora --data runs/repro/data/instruction_data.jsonl \
        --out runs/repro/text_rag_lora --backbone smollm2-135m --steps 100

The result is a CLaRa checkpoint directory whose generator reads text: evaluate it with a
`text_rag` system with `adapter: generator`. Plain PyTorch on one process (a baseline, not the
product). At the full profile's budget it trains for over an hour, so every `--checkpoint-every`
steps it writes its adapter, optimizer and random states to `.<out>.resume.pt` beside `out`: a rerun
of the same command continues from there with the same batches. The output directory appears whole
(temp dir + rename) and a finished run is skipped.
"""
from __future__ import annotations

import io
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from clara_ray.atomic import write_atomic

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
                        max_docs: int = 5, seed: int = 0, log_every: int = 10,
                        checkpoint_every: int = 40) -> list[float]:
    import torch

    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.data.records import read_records

    records = read_records(data, "instruct")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = CLaRa.from_config(CLaRaConfig(backbone=backbone), device="cpu")
    # Text RAG reads its documents whole (five SQuAD paragraphs reach ~2,100 tokens): its limit is
    # the backbone's window, not the cap on CLaRa's compressed prompts (max_length, 2,048).
    model.config.max_length = model.language_model.config.max_position_embeddings
    params = model.adapter_parameters("generator")
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    run = {"data": str(data), "backbone": backbone, "steps": steps, "batch_size": batch_size, "lr": lr,
           "max_docs": max_docs, "seed": seed}
    resume = _resume_path(out)
    losses = _load_resume_state(resume, run, params, optimizer, rng)
    model.train()
    start = time.perf_counter()
    for step in range(len(losses) + 1, steps + 1):
        batch = [r.model_copy(update={"docs": r.docs[:max_docs]}) for r in rng.sample(records, batch_size)]
        optimizer.zero_grad()
        # One record per forward: five SQuAD paragraphs as text are ~1,000 tokens, and a batch of
        # four in one forward+backward (logits over 49k tokens, attention saved for backward)
        # was killed for memory at 24 GB.
        loss = torch.zeros(())
        for record in batch:
            try:
                part = text_rag_loss(model, [record]) / len(batch)
            except ValueError as exc:  # a prompt longer than the window: say which record
                raise ValueError(f"{data}: the record of question {record.question!r}: {exc}") from None
            part.backward()
            loss += part.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            typer.echo(f"step {step}/{steps} loss {loss:.4f} ({time.perf_counter() - start:.0f}s)")
        if step % checkpoint_every == 0 and step < steps:
            _save_resume_state(resume, run, params, optimizer, rng, losses)
    model.eval()
    model.config.trained["generator"] = TEXT_STAGE
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    model.save_pretrained(staging)
    (staging / "text_rag_lora.json").write_text(json.dumps({"data": str(data), "steps": steps, "losses": losses}))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    resume.unlink(missing_ok=True)
    return losses


def _resume_path(out: Path) -> Path:
    return out.parent / f".{out.name}.resume.pt"


def _save_resume_state(path: Path, run: dict, params, optimizer, rng: random.Random, losses: list[float]) -> None:
    """Everything the next steps depend on: adapter weights, AdamW moments and both random
    generators (batches come from `rng`, LoRA dropout from torch's), written whole (temp + rename)."""
    import torch

    state = {"run": run, "losses": losses, "params": [p.detach().clone() for p in params],
             "optimizer": optimizer.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def _load_resume_state(path: Path, run: dict, params, optimizer, rng: random.Random) -> list[float]:
    """The losses of the steps already done (none without a resume file); restores their state."""
    import torch

    if not path.exists():
        return []
    state = torch.load(path, weights_only=False)
    if state["run"] != run:
        changed = sorted(k for k in run if state["run"].get(k) != run[k])
        raise ValueError(f"{path}: saved by a run with other settings ({', '.join(changed)}); "
                         f"delete it to start over")
    with torch.no_grad():
        for p, saved in zip(params, state["params"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    typer.echo(f"resumed from {path} at step {len(state['losses'])}")
    return list(state["losses"])


def main(
    data: Annotated[Path, typer.Option(help="stage-2 JSONL (question, docs, answer)")],
    out: Annotated[Path, typer.Option(help="output checkpoint directory")],
    backbone: Annotated[str, typer.Option()] = "smollm2-135m",
    steps: Annotated[int, typer.Option(min=1)] = 100,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    lr: Annotated[float, typer.Option()] = 1e-4,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="steps between resume checkpoints")] = 40,
) -> None:
    """Fine-tune the text-RAG LoRA baseline; skipped when `out` already holds a finished run."""
    if (out / "text_rag_lora.json").exists():
        typer.echo(f"{out}: already trained, skipped")
        return
    train_text_rag_lora(data, out, backbone, steps, batch_size, lr, checkpoint_every=checkpoint_every)
    typer.echo(f"saved {out}")


if __name__ == "__main__":
    typer.run(main)
