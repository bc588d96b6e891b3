"""Ray Serve application answering questions from a precompressed CLaRa store.

Deployments: `RagIngress` (FastAPI: /v1/rag, OpenAI-compatible /v1/chat/completions and
/v1/models, /healthz) -> `Retriever` (query reasoner + FAISS store) and `Generator` (the
generator adapter reads the retrieved memory-token vectors; hf or vllm backend).
Entry points: `serve deploy serve/config.yaml` (import path `serve.app:build_app`) and
`clara serve --checkpoint ... --store ...`.
"""
