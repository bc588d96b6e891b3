"""apply_torch_threads: the count set in one thread reaches a thread started later.

Runs in a subprocess with OMP_NUM_THREADS=1, as Ray starts its workers; OpenMP's per-thread count
is read through libgomp (the one torch ships), the library MKL's matmuls take their threads from.
"""
import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import ctypes, glob, json, os, threading
    import torch
    from clara_ray.threads import apply_torch_threads

    gomp = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*"))[0])
    torch.set_num_threads(2)  # as a replica's or actor's constructor does
    seen = {}

    def worker():
        seen["before"] = gomp.omp_get_max_threads()
        apply_torch_threads()
        seen["process_count"] = gomp.omp_get_max_threads()
        apply_torch_threads(3)
        seen["explicit"] = gomp.omp_get_max_threads()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    print(json.dumps(seen))
""")


def test_a_later_thread_gets_the_count_set_elsewhere():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == 1  # the problem: a new thread starts from OMP_NUM_THREADS, not from set_num_threads
    assert seen["process_count"] == 2
    assert seen["explicit"] == 3
