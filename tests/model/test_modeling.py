"""Fast tier: the CLaRa mechanism on a tiny random Llama."""
from __future__ import annotations

import copy

import pytest
import torch

from clara_ray import CLaRa, CLaRaConfig
from clara_ray.data.records import parse_record
from model_helpers import randomise_adapters, stage1_records, stage3_records


@pytest.mark.parametrize("rate", [1, 4, 32])
def test_compressed_shape_is_n_by_hidden(rate):
    config = CLaRaConfig(backbone="tiny-random", doc_max_length=32, compression_rate=rate)
    model = CLaRa.from_config(config)
    out = model.compress_documents(["short", "a somewhat longer document with more words in it"])
    assert out.shape == (2, 32 // rate, model.hidden_size)


def test_only_memory_rows_of_the_embedding_get_gradient(tiny_model):
    model = copy.deepcopy(tiny_model)
    model.prepare_stage("compress_pretrain")
    model(stage1_records(), "compress_pretrain").loss.backward()
    embeddings = model.embeddings
    assert embeddings.base.weight.grad is None and not embeddings.base.weight.requires_grad
    assert embeddings.new_rows.grad is not None
    # rows of the memory tokens used in the batch receive gradient
    assert embeddings.new_rows.grad[: model.num_memory_tokens].abs().sum() > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("new_rows" in n or ".compressor." in n or ".generator." in n for n in trainable)


def test_stage3_gradient_reaches_query_reasoner_not_compressor(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("end_to_end")
    for p in model.adapter_parameters("compressor"):
        p.requires_grad_(True)  # would receive gradient if compression were not under no_grad
    out = model(stage3_records(), "end_to_end")
    out.loss.backward()
    assert out.mse is None
    reasoner = model.adapter_parameters("query_reasoner")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in reasoner)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.adapter_parameters("compressor"))
    assert set(out.recall) == {"recall@1", "recall@5"}


def test_end_to_end_initialises_query_reasoner_from_compressor(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    docs = ["Paris is the capital of France."]
    assert not torch.allclose(model.encode_queries(docs), model.compress_documents(docs))
    model.prepare_stage("end_to_end")
    torch.testing.assert_close(model.encode_queries(docs), model.compress_documents(docs))


def test_instruct_stage_reinitialises_generator(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("instruct")
    lora_b = [p for n, p in model.backbone.named_parameters() if ".generator." in n and "lora_B" in n]
    assert lora_b and all(torch.count_nonzero(p) == 0 for p in lora_b)
    assert any(torch.count_nonzero(p) for n, p in model.backbone.named_parameters()
               if ".compressor." in n and "lora_B" in n)


def test_encoding_does_not_depend_on_batch_padding(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    alone = model.encode_queries(["who is there?"])
    padded = model.encode_queries(["who is there?", "a much longer question " * 5])[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


def test_generator_reads_the_scattered_document_vectors(tiny_model):
    model = copy.deepcopy(tiny_model)
    docs = model.compress_documents(["alpha beta", "gamma delta", "epsilon"])
    embeds, mask = model.generator_inputs(["q?"], docs.unsqueeze(0))
    slots = torch.isin(model._generator_batch(model._answer_turns(["q?"], [3]), None).input_ids,
                       torch.tensor(model.memory_ids))
    torch.testing.assert_close(embeds[slots], docs.reshape(-1, model.hidden_size))
    with pytest.raises(ValueError, match="memory slots"):
        model._scatter_memory(model._generator_batch(model._answer_turns(["q?"], [2]), None), docs.unsqueeze(0))


def test_training_targets_are_cut_to_max_length(tiny_model):
    model = copy.deepcopy(tiny_model)
    turns = [("Answer.", "Short question?")]
    prompt_length = len(model._generator_batch(turns, None).input_ids[0])
    model.config.max_length = prompt_length + 3
    batch = model._generator_batch(turns, ["a target much longer than three tokens " * 4])
    assert batch.input_ids.shape[1] == prompt_length + 3 and int((batch.labels != -100).sum()) == 3
    model.config.max_length = prompt_length
    with pytest.raises(ValueError, match="leaves no room for its target under max_length"):
        model._generator_batch(turns, ["x"])


def test_save_load_round_trip_reproduces_outputs(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model, seed=1)
    model.mark_trained("end_to_end")
    model.save_pretrained(tmp_path / "ckpt")
    loaded = CLaRa.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.config == model.config
    docs = ["The Eiffel tower is in Paris.", "Water boils at 100 degrees."]
    torch.testing.assert_close(loaded.compress_documents(docs), model.compress_documents(docs), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_queries(docs), model.encode_queries(docs), rtol=0, atol=0)
    compressed = model.compress_documents(docs).unsqueeze(0)
    embeds, mask = model.generator_inputs(["Where?"], compressed)
    model.eval(), loaded.eval()  # LoRA dropout off, as in every inference path
    with model.adapter("generator"), loaded.adapter("generator"), torch.no_grad():
        a = model.language_model(inputs_embeds=embeds, attention_mask=mask).logits
        b = loaded.language_model(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    kwargs = dict(max_new_tokens=8)
    assert loaded.generate_from_questions(["Where?"], [docs], **kwargs) == \
        model.generate_from_questions(["Where?"], [docs], **kwargs)
    # a fresh model with the same config differs, so the comparison above is not vacuous
    fresh = CLaRa.from_config(model.config)
    assert not torch.equal(fresh.compress_documents(docs), model.compress_documents(docs))


def test_every_saved_adapter_loads_and_missing_ones_are_marked_untrained(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.mark_trained("instruct")
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "adapters" / "generator.safetensors").unlink()
    loaded = CLaRa.from_pretrained(tmp_path / "ckpt")
    assert "generator" not in loaded.config.trained and loaded.config.trained["compressor"] == "instruct"
    with pytest.warns(UserWarning, match="untrained generator"):
        loaded.generate_from_paraphrase(["text"], max_new_tokens=2)


def _spoil_adapter_with_another_rank(ckpt, config):
    other = CLaRa.from_config(config.model_copy(update={"lora": config.lora.model_copy(update={"r": 4})}))
    other.save_pretrained(ckpt.parent / "other")
    (ckpt.parent / "other" / "adapters" / "generator.safetensors").replace(ckpt / "adapters" / "generator.safetensors")


DAMAGED_WEIGHTS = {
    "adapter not safetensors": ("adapters/generator.safetensors",
                                lambda ckpt, _: (ckpt / "adapters" / "generator.safetensors").write_bytes(b"garbage"),
                                "unreadable weights"),
    "adapter of another rank": ("adapters/generator.safetensors", _spoil_adapter_with_another_rank,
                                "weights do not fit this backbone: size mismatch"),
    "memory rows truncated": ("memory_embeddings.safetensors",
                              lambda ckpt, _: (ckpt / "memory_embeddings.safetensors").write_bytes(
                                  (ckpt / "memory_embeddings.safetensors").read_bytes()[:100]),
                              "unreadable weights"),
    "memory rows missing": ("memory_embeddings.safetensors",
                            lambda ckpt, _: (ckpt / "memory_embeddings.safetensors").unlink(), "missing"),
}


@pytest.mark.parametrize("case", DAMAGED_WEIGHTS)
def test_damaged_weights_are_a_checkpoint_error_naming_the_file(case, tiny_model, tmp_path):
    from clara_ray.model.configuration import CheckpointError

    file, spoil, why = DAMAGED_WEIGHTS[case]
    tiny_model.save_pretrained(tmp_path / "ckpt")
    spoil(tmp_path / "ckpt", tiny_model.config)
    with pytest.raises(CheckpointError) as raised:
        CLaRa.from_pretrained(tmp_path / "ckpt")
    message = str(raised.value)
    assert message.startswith(f"{tmp_path / 'ckpt' / file}: ") and why in message and "\n" not in message


def test_merged_adapter_computes_what_the_lora_layers_did_and_pins_the_model(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model, seed=2)
    model.mark_trained("end_to_end")
    model.eval()
    docs = ["The Eiffel tower is in Paris.", "Water boils at 100 degrees."]
    queries = model.encode_queries(docs)
    compressed = model.compress_documents(docs).unsqueeze(0)
    answer = model.generate_from_compressed_documents_and_questions(["Where?"], compressed, max_new_tokens=6)

    retriever, generator = copy.deepcopy(model), copy.deepcopy(model)
    retriever.merge_adapter("query_reasoner")
    generator.merge_adapter("generator")
    assert not any("lora_" in n for n, _ in retriever.named_parameters())  # LoRA layers are gone
    torch.testing.assert_close(retriever.encode_queries(docs), queries, rtol=1e-4, atol=1e-5)
    assert generator.generate_from_compressed_documents_and_questions(
        ["Where?"], compressed, max_new_tokens=6) == answer
    # the merged weights are the query reasoner's, not the generator's or the bare backbone's
    assert not torch.allclose(generator._encode(docs, "generator"), queries, atol=1e-3)

    with pytest.raises(RuntimeError, match="'query_reasoner' adapter merged"):
        retriever.compress_documents(docs)
    with pytest.raises(RuntimeError, match="cannot run the bare backbone"):
        with generator.adapter(None):
            pass
    with pytest.raises(RuntimeError, match="cannot save"):
        generator.save_pretrained(tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_retrieval_warmup_trains_the_query_reasoner_alone_towards_the_gold_candidate(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.prepare_stage("retrieval_warmup")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".query_reasoner." in n and "lora_" in n for n in trainable)
    for p in model.adapter_parameters("compressor"):
        p.requires_grad_(True)  # would receive gradient if candidates were not compressed frozen
    records = [parse_record(r.model_dump(), "retrieval_warmup") for r in stage3_records()]
    model.eval()  # no LoRA dropout, so the loss can be recomputed below
    out = model(records, "retrieval_warmup")
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters("query_reasoner"))
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.adapter_parameters("compressor"))
    assert all(p.grad is None for p in model.adapter_parameters("generator"))
    # InfoNCE with one positive: -log softmax(score/tau)[gold]
    with torch.no_grad():
        scores, _ = model._candidate_scores(records)
        expected = -(scores / model.config.topk_temperature).log_softmax(-1)[0, records[0].pos_index[0]]
    torch.testing.assert_close(out.loss.detach(), expected)
    assert set(out.recall) == {"recall@1", "recall@5"}


def test_retrieval_warmup_needs_gold_indices():
    from clara_ray.data.records import RecordError

    with pytest.raises(RecordError, match="pos_index"):
        parse_record({"question": "q", "docs": ["a", "b"], "answer": "a"}, "retrieval_warmup", "w.jsonl", 3)


def test_stage3_keeps_a_query_reasoner_the_warmup_trained(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    docs = ["Paris is the capital of France."]
    model.config.trained["query_reasoner"] = "retrieval_warmup"
    before = model.encode_queries(docs)
    model.prepare_stage("end_to_end")
    torch.testing.assert_close(model.encode_queries(docs), before)
    assert not torch.allclose(before, model.compress_documents(docs))


def test_instruct_can_keep_the_stage1_generator(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    before = [p.detach().clone() for p in model.adapter_parameters("generator")]
    model.prepare_stage("instruct", generator_init="previous")
    assert all(torch.equal(a, b) for a, b in zip(before, model.adapter_parameters("generator")))
    model.prepare_stage("instruct")  # the reference: re-initialised
    assert not all(torch.equal(a, b) for a, b in zip(before, model.adapter_parameters("generator")))


def test_memory_norm_embedding_feeds_the_generator_vectors_of_token_scale(tiny_model):
    model = copy.deepcopy(tiny_model)
    vectors = torch.randn(3, model.num_memory_tokens, model.hidden_size) * 40
    torch.testing.assert_close(model._generator_scale(vectors), vectors)  # reference: as emitted
    model.config.memory_norm = "embedding"
    scaled = model._generator_scale(vectors).norm(dim=-1)
    token_norms = model.embeddings.base.weight.norm(dim=-1)
    torch.testing.assert_close(scaled, torch.full_like(scaled, float(token_norms.median())))


def test_memory_norm_centered_subtracts_a_running_mean_that_training_keeps_and_checkpoints_carry(tiny_model, tmp_path):
    model = copy.deepcopy(tiny_model)
    model.config.memory_norm = "centered"
    shape = (model.num_memory_tokens, model.hidden_size)
    shared = torch.randn(*shape) * 40  # what every document's memory has in common
    batches = [shared + torch.randn(4, *shape) for _ in range(30)]
    model.eval()
    with pytest.raises(RuntimeError, match="running mean"):
        model._generator_scale(batches[0].reshape(-1, shape[1]))  # nothing to subtract yet
    model.train()
    first = model._generator_scale(batches[0].reshape(-1, shape[1]))
    torch.testing.assert_close(model.memory_center, batches[0].mean(0))  # the first batch sets it
    assert first.shape == (4 * shape[0], shape[1])
    for batch in batches[1:]:
        model._generator_scale(batch.reshape(-1, shape[1]))
    assert (model.memory_center - shared).norm() < 0.1 * shared.norm()  # it tracks the shared part
    model.eval()
    one = shared + torch.randn(1, *shape)
    # at inference a memory's input does not depend on its batch-mates, and the shared part is gone
    alone = model._generator_scale(one.reshape(-1, shape[1]))
    together = model._generator_scale(torch.cat([one, batches[0]]).reshape(-1, shape[1]))[: shape[0]]
    torch.testing.assert_close(alone, together)
    plain = torch.nn.functional.normalize(one.reshape(-1, shape[1]), dim=-1)
    centred = torch.nn.functional.normalize(alone, dim=-1)
    common = torch.nn.functional.normalize(shared, dim=-1)
    assert (centred * common).sum(-1).abs().mean() < 0.5 * (plain * common).sum(-1).abs().mean()
    model.save_pretrained(tmp_path)
    loaded = CLaRa.from_pretrained(tmp_path, device="cpu")
    loaded.eval()
    torch.testing.assert_close(loaded.memory_center, model.memory_center)
    torch.testing.assert_close(loaded._generator_scale(one.reshape(-1, shape[1])), alone)


def test_memory_center_training_batch_leaves_no_gradient_on_what_all_memories_share(tiny_model):
    model = copy.deepcopy(tiny_model)
    model.config.memory_norm = "centered"
    shape = (model.num_memory_tokens, model.hidden_size)
    torch.manual_seed(0)
    weights = torch.randn(4 * shape[0], shape[1])  # a loss that reads every slot

    def shared_gradient(rule: str, memories: torch.Tensor) -> torch.Tensor:
        """d loss / d(a shift added to every memory): what training would do to their shared part."""
        model.config.memory_center_training = rule
        memories = memories.clone().requires_grad_()
        (model._generator_scale(memories.reshape(-1, shape[1])) * weights).sum().backward()
        return memories.grad.sum(0)

    model.train()
    batch = torch.randn(1, *shape) * 40 + torch.randn(4, *shape)
    model._generator_scale(batch.reshape(-1, shape[1]))  # sets the running mean
    # the running mean lags what the compressor emits: the shared part is still a lever...
    lever = shared_gradient("running", batch + 5).norm()
    assert lever > 0
    # ...unless a batch loses its own mean, as batch norm does while it trains
    assert shared_gradient("batch", batch + 5).norm() < 1e-4 * lever

    def minus_running_mean(memories: torch.Tensor) -> torch.Tensor:
        rows = (memories - model.memory_center).reshape(-1, shape[1])
        return rows * model.embeddings.token_norm / rows.norm(dim=-1, keepdim=True)

    with torch.no_grad():  # frozen memories (stages 2-3, the store): the running mean
        frozen = model._generator_scale(batch.reshape(-1, shape[1]))
    torch.testing.assert_close(frozen, minus_running_mean(batch))
    one = batch[:1].expand(3, *shape).clone().requires_grad_()  # one document thrice: its own mean would be zeros
    torch.testing.assert_close(model._generator_scale(one.reshape(-1, shape[1])), minus_running_mean(one))
    model.eval()  # inference subtracts the running mean whatever the rule
    torch.testing.assert_close(model._generator_scale(batch.reshape(-1, shape[1])), minus_running_mean(batch))


def _window_in_document(model, window: str, offset: int, length: int) -> torch.Tensor:
    """The memory of `window` inside a document of `length` tokens, every other token masked out."""
    ids = model.tokenizer(window, add_special_tokens=False)["input_ids"]
    filler = model.tokenizer(" x", add_special_tokens=False)["input_ids"] * length
    body = filler[:offset] + ids + filler[:length - offset - len(ids)]
    bos = [model.tokenizer.bos_token_id] if model.tokenizer.bos_token_id is not None else []
    row = [model.encoder_id, *bos, *body, model.tokenizer.eos_token_id, *model.memory_ids]
    mask = torch.ones(1, len(row), dtype=torch.long)
    start = 1 + len(bos)
    mask[0, start:start + offset] = 0
    mask[0, start + offset + len(ids):start + len(body)] = 0
    with model.adapter("compressor"), torch.no_grad():
        hidden = model.language_model.base_model(input_ids=torch.tensor([row]), attention_mask=mask,
                                                 position_ids=torch.arange(len(row))[None]).last_hidden_state
    return hidden[:, -model.num_memory_tokens:]


def test_a_window_is_compressed_where_it_sits_in_its_document_only_if_window_positions_says_so(tiny_model):
    model = copy.deepcopy(tiny_model)
    randomise_adapters(model)
    model.eval()
    window = "bees build combs of wax"
    n = len(model.tokenizer(window, add_special_tokens=False)["input_ids"])
    offset, length = 9, 9 + n + 7
    record = parse_record({"data_type": "paraphrase", "answers": [window], "docs": [window],
                           "doc_span": [offset, length]}, "compress_pretrain", "mem.jsonl", 1)
    spans = model._window_spans([record.doc_span])
    assert spans is None  # "own", the reference: the span is not read
    with torch.no_grad():
        own = model._encode([window], "compressor")
        torch.testing.assert_close(own, _window_in_document(model, window, 0, n), atol=1e-5, rtol=1e-4)
        model.config.window_positions = "document"
        placed = model._encode([window, "the Rhine flows north"], "compressor",
                               spans=[*model._window_spans([record.doc_span]), None])
    torch.testing.assert_close(placed[:1], _window_in_document(model, window, offset, length), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(placed[1:], model._encode(["the Rhine flows north"], "compressor"))  # no span: as before
    assert (placed[:1] - own).abs().max() > 1e-3


def test_a_window_whose_paragraph_is_longer_than_the_compressor_reads_is_refused(tiny_model):
    """A span the data path did not check (a hand-built record, a bucket-path init) still never
    reaches positions no stage trained."""
    limit = tiny_model.config.doc_max_length
    assert tiny_model._memory_inputs(["bees"], [(limit - 1, limit)]).position_ids is not None  # the edge fits
    with pytest.raises(ValueError, match=rf"doc_span \[0, {limit + 1}\].*model.doc_max_length={limit}"):
        tiny_model._memory_inputs(["bees"], [(0, limit + 1)])


def test_recenter_memory_sets_the_running_mean_a_compressor_trained_under_the_batch_rule_needs(tiny_model):
    model = copy.deepcopy(tiny_model)
    model.config.memory_norm = "centered"
    model.prepare_stage("compress_pretrain")
    assert not model.memory_center_lags  # the running rule: training keeps that mean itself
    model.config.memory_center_training = "batch"
    assert model.memory_center_lags
    docs = ["Bees build combs of wax.", "The Rhine flows into the North Sea.", "Bees build combs of wax."]
    model.train()
    model.recenter_memory([(d, None) for d in docs])
    assert model.training  # restored
    expected = model.compress_documents(docs[:2]).float().mean(0)  # each document once
    torch.testing.assert_close(model.memory_center, expected)
    assert int(model.memory_center_batches) >= 1  # inference may read it now
    model.prepare_stage("end_to_end")  # a frozen compressor: the running mean converges by itself
    assert not model.memory_center_lags


def test_prompt_length_is_the_generator_prompt_the_model_builds(tiny_model):
    from clara_ray.model import prompts

    question, doc = "Where do bees live?", "Honey bees live in hives of wax combs built by the workers."
    batch = tiny_model._generator_batch([prompts.answer_turn([doc, doc], question)], None)
    assert tiny_model.prompt_length(question, [doc, doc]) == int(batch.attention_mask.sum())
    slots = tiny_model._generator_batch([prompts.answer_turn([tiny_model._slot()] * 3, question)], None)
    assert tiny_model.prompt_length(question, 3) == int(slots.attention_mask.sum())
    # one more compressed document costs its memory tokens (and a separator), not its text
    assert tiny_model.prompt_length(question, 3) - tiny_model.prompt_length(question, 2) >= tiny_model.num_memory_tokens


def _interleaved(model: CLaRa) -> CLaRa:
    model = copy.deepcopy(model)
    randomise_adapters(model)
    model.eval()
    model.config.memory_layout = "interleaved"
    return model


def test_interleaved_layout_puts_memory_token_j_after_its_share_of_the_text(tiny_model):
    model = _interleaved(tiny_model)
    texts = ["bees", "bees build combs of wax in the hive and store honey in them for the winter"]
    batch = model._memory_inputs(texts)
    n, memory = model.num_memory_tokens, set(model.memory_ids)
    for row, mask, index, text in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(),
                                      batch.memory_index.tolist(), texts):
        row = row[:sum(mask)]
        assert [row[i] for i in index] == model.memory_ids  # each memory token once, in order, where indexed
        assert [token for token in row if token not in memory] == _end_layout_body(model, text)
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        length = len(ids) + 1  # with its EOS
        before = [sum(token not in memory for token in row[:i]) - 2 for i in index]  # minus ENC and BOS
        assert before == [-(-(j + 1) * length // n) for j in range(n)]  # also for a text shorter than n


def _end_layout_body(model: CLaRa, text: str) -> list[int]:
    """The text's tokens as the reference layout lays them out: ENC, BOS, text, EOS."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [model.tokenizer.bos_token_id] if model.tokenizer.bos_token_id is not None else []
    return [model.encoder_id, *bos, *ids, model.tokenizer.eos_token_id]


def test_an_interleaved_memory_token_reads_the_text_only_up_to_its_share(tiny_model):
    """Under causal attention memory token 0 sees the text's first share alone: two documents that
    differ only after it give it the same state, and their last memory tokens differ. In the
    reference layout every memory token reads the whole text."""
    model = _interleaved(tiny_model)
    same_start = "bees build combs of wax in the hive and store honey in them"
    texts = [f"{same_start} in winter and in summer", f"{same_start} in summer and in winter"]
    ids = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    shared = next(i for i, (a, b) in enumerate(zip(*ids)) if a != b)
    first_share = -(-(len(ids[0]) + 1) // model.num_memory_tokens)
    assert len(ids[0]) == len(ids[1]) and first_share <= shared  # the test's premise
    with torch.no_grad():
        interleaved = model._encode(texts, "compressor")
        torch.testing.assert_close(interleaved[0, 0], interleaved[1, 0])
        assert (interleaved[0, -1] - interleaved[1, -1]).abs().max() > 1e-3
        model.config.memory_layout = "end"
        end = model._encode(texts, "compressor")
    assert (end[0, 0] - end[1, 0]).abs().max() > 1e-3


def test_interleaved_layout_trains_the_compressor_and_needs_whole_documents(tiny_model, tiny_config):
    model = _interleaved(tiny_model)
    model.train()
    model.prepare_stage("compress_pretrain")
    out = model(stage1_records(), "compress_pretrain")
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(out.mse)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter_parameters("compressor"))
    with pytest.raises(ValueError, match="choose one"):
        CLaRaConfig(**{**tiny_config.model_dump(), "memory_layout": "interleaved", "window_positions": "document"})
    with pytest.raises(ValueError, match="cannot place windows by their doc_span"):
        model._memory_inputs(["bees build combs"], spans=[(4, 16)])  # not silently laid out as a whole text
