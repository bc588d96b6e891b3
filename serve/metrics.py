"""The application's metrics, exported by Ray's metrics agent like Serve's own (docs/operations.md).

Ray's Prometheus endpoint on each node (the metrics export port) shows them with the `ray_`
prefix, and `ray.serve.metrics` adds the deployment, replica and application tags. They are
created on first use, in the replica process, where Serve's tags are known.
"""
from __future__ import annotations

from functools import cache

SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]


class Metrics:
    def __init__(self):
        from ray.serve.metrics import Counter, Gauge, Histogram

        route = ("route",)
        self.requests = Counter("clara_requests", "HTTP requests by route and status code.",
                                tag_keys=("route", "status"))
        self.request_seconds = Histogram("clara_request_seconds", "Whole request, body sent (streams: to the end).",
                                         SECONDS, tag_keys=route)
        self.retrieval_seconds = Histogram("clara_retrieval_seconds", "Query encoding and store search, as the "
                                           "ingress waits for it.", SECONDS, tag_keys=route)
        self.generation_seconds = Histogram("clara_generation_seconds", "Answer generation, as the ingress waits "
                                            "for it.", SECONDS, tag_keys=route)
        self.generated_tokens = Counter("clara_generated_tokens", "Answer tokens generated.", tag_keys=route)
        self.batch_size = Histogram("clara_batch_size", "Requests per model call (Retriever, Generator).",
                                    BATCH_SIZES)
        self.queue_wait_seconds = Histogram("clara_queue_wait_seconds", "From a batch queuing for the model to its "
                                            "model call starting, per request.", SECONDS)
        self.store_version = Gauge("clara_store_version", "Store version a Retriever replica serves.")
        self.store_documents = Gauge("clara_store_documents", "Documents in the store version served.")

    def model_call(self, size: int, waits: list[float]) -> None:
        """One model call of `size` requests, which waited `waits` seconds each (serve/coalesce.py)."""
        self.batch_size.observe(size)
        for wait in waits:
            self.queue_wait_seconds.observe(wait)

    def store(self, store) -> None:
        """A CompressedStore put in service."""
        self.store_version.set(store.manifest.version)
        self.store_documents.set(len(store))


@cache
def metrics() -> Metrics:
    return Metrics()
