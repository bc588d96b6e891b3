"""The hf and vllm generator backends give the same greedy tokens on the same compressed inputs."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

VLLM_PYTHON = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"


def _vllm_missing() -> str | None:
    if not VLLM_PYTHON.exists():
        return f"vLLM venv not installed at {VLLM_PYTHON} (see README, Serving)"
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import importlib.util, sys; "
                            "sys.exit(importlib.util.find_spec('vllm') is None)"], capture_output=True)
    return "vllm is not installed in .venv-vllm" if probe.returncode else None


@pytest.fixture(scope="module")
def trained_like_checkpoint(tmp_path_factory, tiny_config):
    """A tiny checkpoint whose generator adapter is non-zero, so merging it changes the weights."""
    from clara_ray import CLaRa

    model = CLaRa.from_config(tiny_config, device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.adapter_parameters("generator"):
            param.normal_(0.0, 0.2)
    path = tmp_path_factory.mktemp("vllm") / "checkpoint"
    model.save_pretrained(path)
    model.eval()
    return model, str(path)


def _hf_backend(model, reader: str = "compressed"):
    """The hf backend as a Generator replica runs it: on its own copy, generator merged."""
    from serve.backends.hf import HFBackend

    served = copy.deepcopy(model)
    served.merge_adapter("generator")
    return HFBackend(served, reader)


def _retrieved(model, docs):
    from serve.retrieved import Retrieved

    vectors = model.compress_documents(docs).numpy().astype(np.float16)
    return Retrieved(ids=[str(i) for i in range(len(docs))], scores=[1.0] * len(docs), texts=docs,
                     sources=[""] * len(docs), vectors=vectors)


@pytest.mark.slow
def test_vllm_matches_hf_greedy_tokens(trained_like_checkpoint, tmp_path):
    reason = _vllm_missing()
    if reason:
        pytest.skip(reason)
    from clara_ray.batches import run_isolated
    from serve.backends.vllm import VllmBackend, VllmInputError
    from serve.settings import ServeSettings

    model, checkpoint = trained_like_checkpoint
    questions = ["Which river flows north?", "What is the capital of France?"]
    retrieved = [_retrieved(model, ["The Nile flows north into the sea.", "Paris is in France."]),
                 _retrieved(model, ["Paris is the capital of France."])]
    settings = ServeSettings(checkpoint=checkpoint, store=str(tmp_path / "unused"), backend="vllm",
                             vllm={"kv_cache_memory_bytes": 128 << 20, "max_model_len": 512,
                                   "export_dir": str(tmp_path / "export")})
    hf = _hf_backend(model)
    vllm = VllmBackend(copy.deepcopy(model), settings)  # keeps only the embedding of the model it is given
    try:
        # One question per call: no left padding on the hf side, exactly the vLLM prompts.
        for question, docs in zip(questions, retrieved):
            expected = hf.generate_ids([question], [docs], 12)[0]
            assert len(set(expected)) > 1, "degenerate reference; pick another seed"
            assert vllm.generate_ids([question], [docs], 12)[0] == expected
        both = vllm.generate(questions, retrieved, 12)  # batched inside vLLM
        assert both == [hf.generate([q], [r], 12)[0] for q, r in zip(questions, retrieved)]
        # A prompt vLLM refuses (past max_model_len) is the input's fault, a ValueError, and the worker
        # stays up: retried alone, the other question of that batch still gets its answer.
        outcomes = run_isolated(lambda qs: vllm.generate(qs, retrieved[:1] * len(qs), 12), [questions[0], "why " * 600])
        assert outcomes[0] == both[0]
        assert isinstance(outcomes[1], VllmInputError) and isinstance(outcomes[1], ValueError), outcomes[1]
    finally:
        vllm.close()
    assert (tmp_path / "export" / "config.json").exists()


def test_generator_export_is_a_complete_entry_with_the_adapter_merged(trained_like_checkpoint, tmp_path):
    """The export vLLM loads, built without vLLM: once, in a clean process, into a complete entry."""
    from safetensors.torch import load_file

    from clara_ray.backbones import resolve_backbone
    from clara_ray.cache import entry_problem
    from serve.backends.vllm import export_generator

    model, checkpoint = trained_like_checkpoint
    export = export_generator(checkpoint, tmp_path / "export")
    assert entry_problem(export) is None
    merged = load_file(str(export / "model.safetensors"))
    plain = load_file(str(Path(resolve_backbone(model.config.backbone)) / "model.safetensors"))
    assert merged.keys() == plain.keys()
    assert any(not torch.equal(merged[k], plain[k]) for k in plain), "the generator adapter was not merged"
    built = (export / "model.safetensors").stat().st_mtime_ns
    assert export_generator(checkpoint, export) == export and (export / "model.safetensors").stat().st_mtime_ns == built


def test_vllm_generator_loads_on_the_cpu_and_keeps_only_the_input_embedding(trained_like_checkpoint, tmp_path):
    """A vLLM Generator on a GPU node: the engine holds the weights on the GPU, the replica's CLaRa stays on
    the CPU (`cuda` here, where there is no GPU, would fail to load) and shrinks to the input embedding, which
    still builds exactly the prompt embeddings the full model builds."""
    from serve.backends.vllm import keep_input_embedding_only
    from serve.loading import load_model
    from serve.retrieved import memory_vectors
    from serve.settings import ServeSettings

    model, checkpoint = trained_like_checkpoint
    settings = ServeSettings(checkpoint=checkpoint, store=str(tmp_path), backend="vllm", device="cuda:0")
    assert settings.model_device("query_reasoner") == "cuda:0"
    assert ServeSettings(checkpoint=checkpoint, store="s", device="cuda:0").model_device("generator") == "cuda:0"
    served = load_model(settings, adapter="generator")
    assert served.device.type == "cpu"
    questions = ["Which river flows north?", "Where is Paris?"]
    retrieved = [_retrieved(model, ["The Nile flows north.", "Paris is in France."]), _retrieved(model, ["Paris."])]
    with torch.no_grad():
        expected = served.generator_inputs(questions, memory_vectors(retrieved, served))
        keep_input_embedding_only(served)
        embeds, mask = served.generator_inputs(questions, memory_vectors(retrieved, served))
    assert torch.equal(embeds, expected[0]) and torch.equal(mask, expected[1])
    kept = {id(p) for p in served.parameters() if not p.is_meta}
    assert kept == {id(p) for p in served.embeddings.parameters()}  # (the tied output head is that table)
    assert any(p.is_meta for p in served.parameters())  # transformer layers and LoRA weights freed
    assert served.decode_answers([[served.tokenizer.encode("Paris")[0]]]) == ["Paris"]


def test_vllm_worker_python_is_an_installed_vllm_else_the_configured_venv(tmp_path, monkeypatch):
    from serve.backends.vllm import VllmBackendError, vllm_python
    from serve.settings import VLLM_PYTHON_ENV, VllmSettings

    venv_python = tmp_path / "venv" / "bin" / "python"
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(venv_python))  # as the GPU image sets it
    settings = VllmSettings()
    assert settings.python == str(venv_python)
    with pytest.raises(VllmBackendError, match=f"vLLM python {venv_python} not found"):
        vllm_python(settings)
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    assert vllm_python(settings) == venv_python
    (tmp_path / "site" / "vllm").mkdir(parents=True)  # a vllm package importable by this interpreter
    (tmp_path / "site" / "vllm" / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert vllm_python(settings) == Path(sys.executable)


def test_vllm_backend_refuses_the_text_reader(trained_like_checkpoint, tmp_path):
    from serve.backends.vllm import VllmBackend
    from serve.settings import ServeSettings

    model, checkpoint = trained_like_checkpoint
    settings = ServeSettings(checkpoint=checkpoint, store=str(tmp_path), backend="vllm", reader="text")
    with pytest.raises(ValueError, match="compressed reader only"):
        VllmBackend(model, settings)


def test_hf_stream_pieces_join_to_the_answer_and_end_with_its_ids(trained_like_checkpoint):
    model, _ = trained_like_checkpoint
    docs = _retrieved(model, ["Oxygen has atomic number 8."])
    hf = _hf_backend(model)
    question = "What is oxygen's atomic number?"
    *pieces, ids = list(hf.stream(question, docs, 10))
    assert "".join(pieces).strip() == hf.generate([question], [docs], 10)[0]
    assert ids == hf.generate_ids([question], [docs], 10)[0]  # what the usage is counted from


def test_hf_text_reader_ids_decode_to_the_text_rag_answer(trained_like_checkpoint):
    model, _ = trained_like_checkpoint
    docs = _retrieved(model, ["Oxygen has atomic number 8.", "Paris is in France."])
    hf = _hf_backend(model, reader="text")
    questions = ["What is oxygen's atomic number?", "Where is Paris?"]
    ids = hf.generate_ids(questions, [docs, docs], 6)
    assert hf.model.decode_answers(ids) == hf.model.generate_from_text(questions, [docs.texts] * 2, 6)
    *pieces, last = list(hf.stream(questions[0], docs, 6))
    assert (pieces, last) == (hf.model.decode_answers(ids[:1]), ids[0])


def test_token_streamer_yields_each_token_and_holds_back_a_split_character(tiny_model):
    from serve.backends.hf import TokenStreamer

    tokenizer = tiny_model.tokenizer
    text = "Paris, 🙂 then Rome"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    streamer = TokenStreamer(tokenizer, skip_prompt=True)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt: skipped
    pieces = []
    for token in ids:
        streamer.put(torch.tensor([token]))
        while not streamer.text_queue.empty():
            pieces.append(streamer.text_queue.get_nowait())
    streamer.end()
    assert pieces[0] == tokenizer.decode(ids[:1])  # the first token, before its word is complete
    assert not any("\ufffd" in p for p in pieces)  # the emoji's bytes come over several tokens
    assert "".join(pieces) == text
    assert streamer.generated == ids  # every token, for the usage, though end() empties the cache
