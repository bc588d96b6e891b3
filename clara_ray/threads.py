"""torch's CPU thread count, applied in the thread that computes.

OpenMP, which MKL's matmuls run on, keeps the thread count per OS thread, and Ray starts its
workers with OMP_NUM_THREADS set to their CPU share (1 for fractional actors). A count set with
`torch.set_num_threads` in an actor's constructor therefore does not reach the threads Ray Data
calls batches on, nor Serve's `asyncio.to_thread` calls, nor a streaming thread: their matmuls run
on one core while `torch.get_num_threads()` reports more (measured: a 25x576 @ 576x1536 matmul
at 0.90 ms in such a thread vs 0.62 ms in the constructor's thread, with 2 threads set).
"""
from __future__ import annotations


def apply_torch_threads(threads: int | None = None) -> None:
    """Make the calling thread compute with `threads` (None: the count last set in this process)."""
    import torch

    torch.set_num_threads(threads or torch.get_num_threads())
