"""Time of one GAMP iteration over the time of one X @ w matvec, all measured side by side in one run.

For (n, d) in {(4000, 4000), (8000, 4000)} x {float64, float32}, a Gaussian prior and the Sign
(and Linear) channels of `amp.teacher_student`, at the state reached after a few iterations:
    matvec    X @ w                                          (BLAS, with its own threads)
    two-pass  Omega = X @ w / sqrt(d) - g V, g_out, X^T g     (plain NumPy: two trips of X through memory)
    block     amp.gamp.output_sweep, NumPy row blocks of BLOCK_BYTES (the generic path of amp.gamp)
    fused     amp.fused.output_sweep, numba, one trip of each row tile (numba threads, pinned below)
    it-block  one whole amp.gamp iteration, fused=False (sweep, f_in, damping and the recorded stats)
    it-fused  one whole amp.gamp iteration, fused=True
Each method is timed in blocks of consecutive calls after one untimed call (which wakes its threads),
the methods in rotating order over several rounds; a whole-iteration time is the gap between two
callbacks of amp.gamp. Printed are the medians and their ratios to the matvec's median, the CPU load
of other processes during the measurement (the machines are shared), and the peak memory of a
full amp.gamp run over X.nbytes (tracemalloc). The table is also written as JSON to benchmarks/output/.

    python benchmarks/gamp_iteration.py [--quick] [--threads N] [--block-mib 1,2,4,8,16]

--threads sets numba's threads (default: every core this process may run on); BLAS keeps its own
default (set OPENBLAS_NUM_THREADS=N to match). --block-mib also times the row-block pass at other
BLOCK_BYTES (the tuning of amp.gamp.BLOCK_BYTES).
"""
import argparse
import json
import math
import os
import pathlib
import time
import tracemalloc

import numba
import numpy as np

import amp
import denoisers as dn
from amp import fused
from amp.gamp import BLOCK_BYTES, output_sweep

SHAPES = [(4000, 4000), (8000, 4000)]
DTYPES = [np.float64, np.float32]
CHANNELS = {"sign": dn.Sign(), "linear": dn.Linear(0.1)}
PRIOR = dn.Gaussian()
OUT = pathlib.Path(__file__).parent / "output" / "gamp_iteration.json"
#: pause before each block of calls, so that the thread pool of the previous method (OpenBLAS or
#: numba's OpenMP workers, which spin-wait a while after each call) is asleep and leaves the cores
SETTLE_S = 0.15


class CpuLoad:
    """CPU share of other processes between start() and stop(), from /proc/stat (Linux; else None)."""

    def start(self):
        self._t0 = self._read()

    def stop(self):
        t1 = self._read()
        if self._t0 is None or t1 is None:
            return None
        (busy0, total0, own0), (busy1, total1, own1) = self._t0, t1
        total = max(1, total1 - total0)
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / total

    @staticmethod
    def _read():
        try:
            fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + fields[4]
        own = sum(os.times()[:2]) * os.sysconf("SC_CLK_TCK")
        return sum(fields[:8]) - idle, sum(fields[:8]), own


def gamp_state(inst, channel, iterations=3):
    """What (d, 1), Chat (1, 1) and g (n, 1, 1) after a few GAMP iterations: a typical point of a run."""
    run = amp.gamp(inst.X, inst.y, PRIOR, channel, max_iter=iterations, tol=0.0, seed=1)
    X3 = inst.X[:, None, :]
    g, _, _ = output_sweep(X3, inst.y, run.W, np.zeros((inst.n, 1, 1), inst.X.dtype), run.C, channel, 256)
    return run.W, run.C, g


def sweep_methods(inst, channel, W, C, g_prev, block_mib):
    """Callables of the output sweep (steps 2 to 5 of an iteration) and of the matvec."""
    X, y = inst.X, inst.y
    X3 = X[:, None, :]
    w = np.ascontiguousarray(W[:, 0])
    inv_sqrt_d = X.dtype.type(1.0 / math.sqrt(inst.d))
    g1, V = g_prev[:, 0, 0], C[0, 0]
    kernel = channel.scalar_kernel()

    def two_pass():
        omega = (X @ w) * inv_sqrt_d - g1 * V
        g, dg = channel.g_out(y, omega[:, None, None], C)
        return X.T @ g[:, 0, 0], dg.sum()

    methods = {"matvec": lambda: X @ w, "two-pass": two_pass}
    for mib in block_mib:
        rows = max(1, min(inst.n, (mib << 20) // (inst.d * X.itemsize)))
        name = "block" if (mib << 20) == BLOCK_BYTES else f"block {mib} MiB"
        methods[name] = lambda rows=rows: output_sweep(X3, y, W, g_prev, C, channel, rows)
    methods["fused"] = lambda: fused.output_sweep(X3, y, W, g_prev, C, kernel)
    return methods


def time_sweeps(methods, rounds, calls):
    """All timed calls per method: `rounds` rounds in rotating order, `calls` timed after one untimed."""
    times = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            methods[name]()
            for _ in range(calls):
                t0 = time.perf_counter()
                methods[name]()
                times[name].append(time.perf_counter() - t0)
    return times


def time_iterations(inst, channel, fused_flag, rounds, iterations):
    """Gaps between consecutive callbacks of amp.gamp (the first gap dropped), over `rounds` runs."""
    gaps = []
    for r in range(rounds):
        stamps = []

        def stamp(t, W, C):
            stamps.append(time.perf_counter())

        time.sleep(SETTLE_S)
        amp.gamp(inst.X, inst.y, PRIOR, channel, max_iter=iterations + 2, tol=0.0, seed=r, fused=fused_flag,
                 callback=stamp)
        gaps += list(np.diff(stamps)[1:])
    return gaps


def peak_memory(inst, channel, fused_flag):
    """Peak traced allocations over X.nbytes: of a full amp.gamp run, and of its iterations 2 and 3 only."""
    def reset_after_first(t, W, C):
        if t == 1:
            tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        amp.gamp(inst.X, inst.y, PRIOR, channel, max_iter=3, tol=0.0, fused=fused_flag)
        run_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        amp.gamp(inst.X, inst.y, PRIOR, channel, max_iter=3, tol=0.0, fused=fused_flag, callback=reset_after_first)
        iteration_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return 1.0 + run_peak / inst.X.nbytes, 1.0 + iteration_peak / inst.X.nbytes


def measure(n, d, dtype, channel_name, args):
    channel = CHANNELS[channel_name]
    inst = amp.teacher_student(d=d, alpha=n / d, prior=PRIOR, channel=channel, seed=0, dtype=dtype)
    W, C, g_prev = gamp_state(inst, channel)
    methods = sweep_methods(inst, channel, W, C, g_prev, args.block_mib)
    load = CpuLoad()
    load.start()
    times = time_sweeps(methods, args.rounds, args.calls)
    times["it-block"] = time_iterations(inst, channel, False, args.rounds, args.iterations)
    times["it-fused"] = time_iterations(inst, channel, True, args.rounds, args.iterations)
    others = load.stop()
    medians = {name: float(np.median(t)) for name, t in times.items()}
    mem_fused, mem_fused_iter = peak_memory(inst, channel, True)
    mem_block, mem_block_iter = peak_memory(inst, channel, False)
    return {"n": n, "d": d, "dtype": np.dtype(dtype).name, "channel": repr(channel),
            "median_s": medians, "ratio_to_matvec": {k: v / medians["matvec"] for k, v in medians.items()},
            "timed_calls": {k: len(v) for k, v in times.items()}, "others_cpu_load": others,
            "peak_over_X_nbytes": {"fused run": mem_fused, "fused iterations": mem_fused_iter,
                                   "block run": mem_block, "block iterations": mem_block_iter}}


def print_header(columns):
    print(f"{'n':>5} {'d':>5} {'dtype':>7} {'channel':>22} {'matvec ms':>9} "
          + " ".join(f"{c:>{max(8, len(c))}}" for c in columns if c != "matvec") + f" {'others':>6}")


def print_row(row, columns):
    ratios = row["ratio_to_matvec"]
    load = "  n/a" if row["others_cpu_load"] is None else f"{100 * row['others_cpu_load']:5.0f}%"
    print(f"{row['n']:>5} {row['d']:>5} {row['dtype']:>7} {row['channel']:>22} {1e3 * row['median_s']['matvec']:>9.2f} "
          + " ".join(f"{ratios[c]:>{max(8, len(c))}.2f}" for c in columns if c != "matvec") + f" {load}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls, Sign only")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="numba threads")
    parser.add_argument("--block-mib", default=str(BLOCK_BYTES >> 20),
                        help="comma-separated row-block sizes (MiB) of the NumPy pass to time")
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    args = parser.parse_args(argv)
    args.block_mib = sorted({int(v) for v in args.block_mib.split(",")} | {BLOCK_BYTES >> 20})
    args.rounds, args.calls, args.iterations = (3, 3, 4) if args.quick else (7, 5, 6)
    channels = ["sign"] if args.quick else list(CHANNELS)
    numba.set_num_threads(args.threads)

    print(f"numba {numba.__version__}: {numba.get_num_threads()} thread(s); BLAS: its default threads "
          f"(OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}); "
          f"{os.cpu_count()} CPUs; BLOCK_BYTES = {BLOCK_BYTES >> 20} MiB")
    print("ratios: median time over the median time of one X @ w; 'others' is the CPU load of other processes")
    rows = []
    for n, d in SHAPES:
        for dtype in DTYPES:
            for name in channels:
                row = measure(n, d, dtype, name, args)
                if not rows:
                    print_header(list(row["ratio_to_matvec"]))
                print_row(row, list(row["ratio_to_matvec"]))
                rows.append(row)
    print(f"\nnumba threading layer: {numba.threading_layer()}")
    print("peak memory over X.nbytes (tracemalloc; run = whole amp.gamp call, iterations = after the first):")
    for row in rows:
        mem = row["peak_over_X_nbytes"]
        print(f"  {row['n']:>5} x {row['d']:<5} {row['dtype']:>7} {row['channel']:>22}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in mem.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"numba_threads": numba.get_num_threads(), "threading_layer": numba.threading_layer(),
            "cpus": os.cpu_count(), "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "block_bytes": BLOCK_BYTES, "rounds": args.rounds, "calls_per_round": args.calls,
            "iterations_per_run": args.iterations}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
