"""The text-RAG LoRA baseline learns its training answers and saves a loadable checkpoint."""
import json

from experiments.text_rag_lora import TEXT_STAGE, train_text_rag_lora


def test_text_rag_lora_fits_a_tiny_set_and_round_trips(tmp_path):
    from clara_ray import CLaRa

    data = tmp_path / "instruction_data.jsonl"
    rows = [{"question": f"What is code {i}?", "docs": [f"Code {i} is {w}.", "Unrelated text."], "answer": w}
            for i, w in enumerate(["alpha", "bravo", "charlie", "delta"])]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
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
