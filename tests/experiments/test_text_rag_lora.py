"""The text-RAG LoRA baseline learns its training answers and saves a loadable checkpoint."""
import json

import pytest

from experiments import text_rag_lora
from experiments.text_rag_lora import TEXT_STAGE, train_text_rag_lora

ROWS = [{"question": f"What is code {i}?", "docs": [f"Code {i} is {w}.", "Unrelated text."], "answer": w}
        for i, w in enumerate(["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"])]


def _write_data(tmp_path, rows=ROWS[:4]):
    data = tmp_path / "instruction_data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_text_rag_lora_fits_a_tiny_set_and_round_trips(tmp_path):
    from clara_ray import CLaRa

    rows = ROWS[:4]
    data = _write_data(tmp_path, rows)
    out = tmp_path / "lora"
    losses = train_text_rag_lora(data, out, "tiny-random", steps=20, batch_size=4, lr=2e-2, log_every=100)
    # same 4 records every step: the loss must fall (the tiny random model's final norm and small
    # lm_head bound how far: ln(vocab) = 10.8 at the start, about 10.2 reachable)
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    model = CLaRa.from_pretrained(out, device="cpu")
    # LoRA B matrices start at zero: non-zero after loading means the trained generator was saved
    assert any(p.abs().sum() > 0 for n, p in model.backbone.named_parameters() if ".generator." in n and "lora_B" in n)
    assert all(p.abs().sum() == 0 for n, p in model.backbone.named_parameters() if ".compressor." in n and "lora_B" in n)
    assert model.config.trained["generator"] == TEXT_STAGE
    assert not list(tmp_path.glob(".lora.*"))  # no staging directory left behind
    answers = model.generate_from_text([rows[0]["question"]], [rows[0]["docs"]], max_new_tokens=3)
    assert len(answers) == 1 and isinstance(answers[0], str)


class _Crash(Exception):
    pass


def test_an_interrupted_run_resumes_with_the_same_batches_and_weights(tmp_path, monkeypatch):
    from clara_ray import CLaRa

    data = _write_data(tmp_path, ROWS)  # 6 records, batches of 2: the sampled batches differ step to step
    kwargs = dict(backbone="tiny-random", steps=6, batch_size=2, lr=2e-2, log_every=100, checkpoint_every=2)
    straight = train_text_rag_lora(data, tmp_path / "straight", **kwargs)

    # crash in step 4 (one forward per record): steps 1-3 done, the checkpoint of step 2 on disk
    monkeypatch.setattr(text_rag_lora, "text_rag_loss", _raise_on_call(3 * kwargs["batch_size"] + 1))
    out = tmp_path / "resumed"
    with pytest.raises(_Crash):
        train_text_rag_lora(data, out, **kwargs)
    assert not out.exists() and (tmp_path / ".resumed.resume.pt").exists()
    monkeypatch.undo()

    resumed = train_text_rag_lora(data, out, **kwargs)
    assert resumed == pytest.approx(straight, rel=1e-5)  # steps 3-6 redone from the step-2 state
    assert not (tmp_path / ".resumed.resume.pt").exists()
    a, b = (dict(CLaRa.from_pretrained(tmp_path / d, device="cpu").backbone.named_parameters())
            for d in ("straight", "resumed"))
    assert all(a[n].allclose(b[n], atol=1e-6) for n in a if ".generator." in n)


def test_a_resume_file_of_other_settings_is_refused_by_name(tmp_path, monkeypatch):
    data = _write_data(tmp_path, ROWS)
    kwargs = dict(backbone="tiny-random", batch_size=2, lr=2e-2, log_every=100, checkpoint_every=1)
    monkeypatch.setattr(text_rag_lora, "text_rag_loss", _raise_on_call(3))
    with pytest.raises(_Crash):
        train_text_rag_lora(data, tmp_path / "lora", steps=4, **kwargs)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"resume\.pt: saved by a run with other settings \(steps\)"):
        train_text_rag_lora(data, tmp_path / "lora", steps=5, **kwargs)


def _raise_on_call(n):
    real_loss, calls = text_rag_lora.text_rag_loss, []

    def loss(model, records):
        calls.append(1)
        if len(calls) >= n:
            raise _Crash
        return real_loss(model, records)
    return loss


def test_a_record_past_the_backbone_s_window_is_named_and_nothing_is_written(tmp_path):
    long_doc = " ".join(["word"] * 1400)  # two of them pass the tiny backbone's 2,048-token window
    too_long = {"question": "What is too long?", "docs": [long_doc, long_doc], "answer": "word"}
    data = _write_data(tmp_path, [too_long])
    with pytest.raises(ValueError, match=r"instruction_data\.jsonl: the record of question 'What is too long\?'"):
        train_text_rag_lora(data, tmp_path / "lora", "tiny-random", steps=1, batch_size=1, log_every=100)
    assert not (tmp_path / "lora").exists()
