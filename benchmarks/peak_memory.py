"""Peak memory of one amp.gamp run over the bytes B = X.nbytes of its data, in a fresh process.

Measured after a tiny warm-up run (imports, numba's compiled kernels), for a sign perceptron
with a Gaussian prior at (n, d):
    instance  tracemalloc's peak while amp.teacher_student draws (X, y, W*), over B
    run       tracemalloc's peak during amp.gamp (X alive throughout, so >= 1), over B; run_extra_bytes
              is that peak less B (O(n + d) and the 1 MiB blocks of the finiteness check of X)
    rss       growth of the resident set (VmHWM, the peak of this process's own memory map, less the
              RSS before X was drawn), over B; ru_maxrss would count the parent's RSS at fork
    bound     1.1 + (n + d) / B, the claim's budget with one O(n + d) vector allowance per entry
NumPy allocations are traced by tracemalloc. Path: 'fused', 'blocks' (fused=False) or 'dask'
(an instance of backend='dask' in four row chunks, on dask's local threads: B is then the bytes of
the chunks, the only copy of X).

    python benchmarks/peak_memory.py N D DTYPE PATH [ITERATIONS]     # prints one JSON object
"""
import json
import sys
import tracemalloc

import numpy as np

import amp
import denoisers as dn

PATHS = ("fused", "blocks", "dask")


def status_bytes(field):
    """A size field of /proc/self/status (VmRSS: the resident set now, VmHWM: its peak), in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(n, d, dtype, path, iterations):
    prior, channel = dn.Gaussian(), dn.Sign()
    options = {"fused": path == "fused"} if path != "dask" else {}

    def instance(n, d):
        itemsize = np.dtype(dtype).itemsize
        chunks = {"backend": "dask", "chunk_bytes": -(-n // 4) * d * itemsize} if path == "dask" else {}
        return amp.teacher_student(d=d, alpha=n / d, prior=prior, channel=channel, seed=0, dtype=dtype, **chunks)

    def run(inst):
        amp.gamp(inst.X, inst.y, prior, channel, max_iter=iterations, tol=0.0, seed=1, **options)

    run(instance(128, 64))  # warm-up
    rss0 = status_bytes("VmRSS")
    tracemalloc.start()
    inst = instance(n, d)
    instance_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    run(inst)
    run_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_peak = status_bytes("VmHWM")
    B = inst.X.nbytes
    return {"n": n, "d": d, "dtype": np.dtype(dtype).name, "path": path, "iterations": iterations, "X_bytes": B,
            "instance_over_B": instance_peak / B, "run_over_B": run_peak / B,
            "run_extra_bytes": run_peak - B, "rss_over_B": (rss_peak - rss0) / B,
            "bound_over_B": 1.1 + (n + d) / B}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (4, 5) or argv[3] not in PATHS:
        sys.exit(f"usage: python benchmarks/peak_memory.py N D DTYPE {{{','.join(PATHS)}}} [ITERATIONS]")
    n, d, dtype, path = int(argv[0]), int(argv[1]), argv[2], argv[3]
    print(json.dumps(measure(n, d, dtype, path, int(argv[4]) if len(argv) == 5 else 3)))


if __name__ == "__main__":
    main()
