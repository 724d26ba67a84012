"""Benchmark suite: per-iteration time of GAMP, low-rank AMP and VAMP over the streaming floor measured
in the same run, state evolution seconds per alpha point, Quadrature channel throughput, peak memory.

    python benchmarks/suite.py [--shapes 1000x1000,4000x4000,8000x4000] [--dtypes float64,float32]
                               [--repeats 5] [--rounds 3] [--largest] [--only gamp,lowrank,...]
                               [--out benchmarks/output/suite.json] [--force]

Rows (times are medians over rounds x repeats; an iteration's time is the gap between two callbacks
of the algorithm, the first gap of each run dropped; the methods of a group take turns, round by round):
    floor       one X @ w (w a vector): X streamed once at the machine's bandwidth (BLAS, its own
                threads), timed in the same group as the algorithm, on the matrix the algorithm reads
    gamp        amp.gamp, sign perceptron with a Gaussian prior at (n, d): the fused numba sweep,
                the NumPy row blocks (fused=False) and a Dask X in 4 row chunks (dask's synchronous
                scheduler, one chunk after the other, each swept by the fused kernel)
    lowrank     amp.lowrank on a spiked Wigner Y (N, N), N^2 = n d (X's bytes), Rademacher, Delta = 0.5
    vamp        amp.vamp on X = U diag(s) Vt with condition number 10 (its SVD given), BernoulliGauss(0.3)
                and Linear(1e-3): an iteration reads U (n, r) and Vt (r, d) twice each, r = min(n, d), so
                its floor is 2 (n + d) r / (n d) of X's
    se          state_evolution.gamp for the sign perceptron (Gaussian prior) to tol 1e-10: seconds per alpha
    quadrature  denoisers.Quadrature (where it exists) for y = z1 z2 + N(0, 0.01), k = 2: g_out samples/s
    memory      peak memory of an amp.gamp run over X.nbytes (benchmarks/peak_memory.py, one fresh
                process per row, at the largest shape; the claim is <= 1.1 + (n + d) / B)
ratio = median / floor of the same group. 'others' is the CPU load of other processes while the group
ran: on a shared machine, --threads 1 (numba's and, through threadpoolctl where installed, BLAS's
threads) keeps one busy core from stalling every multi-threaded call. --largest adds the largest
n = d whose X takes at most 40% of the free memory (GAMP and memory rows). The JSON holds every row
and the machine's description; an existing file is kept unless --force. benchmarks/gpu.py runs the
same table on CuPy arrays.
"""
import argparse
import dataclasses
import functools
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numba
import numpy as np

import amp
import denoisers as dn
import state_evolution as se
from gamp_iteration import SETTLE_S, CpuLoad

try:
    from threadpoolctl import threadpool_info, threadpool_limits
except ImportError:  # BLAS then keeps its own threads
    threadpool_info = threadpool_limits = None

HERE = pathlib.Path(__file__).parent
OUT = HERE / "output" / "suite.json"
BENCHES = ("gamp", "lowrank", "vamp", "se", "quadrature", "memory")
#: fraction of the free memory the --largest X may take (GAMP keeps O(n + d) besides)
LARGEST_FRACTION = 0.4
SE_ALPHAS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


@dataclasses.dataclass
class Backend:
    """Where the arrays live: 'numpy' (CPU) or 'cupy'; sync() waits for the device; free_bytes() its free memory."""

    name: str = "numpy"
    sync: object = lambda: None
    free_bytes: object = None
    device: str = "cpu"

    def __post_init__(self):
        if self.free_bytes is None:
            self.free_bytes = _available_memory

    @property
    def cpu(self):
        return self.name == "numpy"


def _available_memory():
    """MemAvailable of /proc/meminfo, in bytes (Linux)."""
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


# ---------------------------------------------------------------------------------- timing


def call_times(fn, sync, repeats):
    """Seconds of `repeats` calls of fn, timed one by one after an untimed one (which wakes its threads)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def iteration_times(run, repeats, seed):
    """Gaps between consecutive callbacks of run(callback, max_iter, seed), the first one dropped."""
    stamps = []
    run(lambda t, W, C: stamps.append(time.perf_counter()), repeats + 2, seed)
    return list(np.diff(stamps)[1:])


def time_group(methods, rounds):
    """{name: all seconds}: each method(round) returns one round's seconds; rotating order per round."""
    times = {name: [] for name in methods}
    names = list(methods)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            times[name] += methods[name](r)
    return times


def group_rows(bench, shape, dtype, methods, rounds):
    """Rows of a timed group: each method's median and its ratio to the group's floor."""
    load = CpuLoad()
    load.start()
    times = time_group(methods, rounds)
    others = load.stop()
    floor = float(np.median(times["floor"]))
    rows = []
    for name, t in times.items():
        median = float(np.median(t))
        rows.append({"bench": "floor" if name == "floor" else bench, "variant": name, "shape": list(shape),
                     "dtype": np.dtype(dtype).name, "median_s": median, "min_s": float(np.min(t)), "floor_s": floor,
                     "ratio": median / floor,
                     "samples": len(t), "others_cpu_load": others})
    return rows


def floor_method(M, backend, repeats):
    """One M @ w per call, w a vector: the time to stream M once."""
    w = M[0] * 0 + 1  # a (d,) vector in M's namespace, dtype and device
    return lambda r: call_times(lambda: M @ w, backend.sync, repeats)


# ---------------------------------------------------------------------------------- groups


def gamp_group(n, d, dtype, args, backend):
    prior, channel = dn.Gaussian(), dn.Sign()
    inst = amp.teacher_student(d=d, alpha=n / d, prior=prior, channel=channel, seed=0, dtype=dtype,
                               backend=backend.name)

    def gamp_method(X, **options):
        def run(callback, max_iter, seed):
            amp.gamp(X, inst.y, prior, channel, max_iter=max_iter, tol=0.0, seed=seed, callback=callback, **options)
        return lambda r: iteration_times(run, args.repeats, r)

    methods = {"floor": floor_method(inst.X, backend, args.repeats)}
    if backend.cpu:
        methods["fused"] = gamp_method(inst.X, fused=True)
    methods["row-blocks"] = gamp_method(inst.X, fused=False)
    if not backend.cpu:
        methods["one-block"] = gamp_method(inst.X, block_rows=n)
    if backend.cpu and _has_dask() and 2 * inst.X.nbytes < backend.free_bytes():
        import dask
        import dask.array as da
        # the same numbers in 4 persisted row chunks (a copy of X, made where it fits), swept one after
        # the other by dask's synchronous scheduler in this thread, each by the fused kernel (--threads)
        run_dask = gamp_method(da.from_array(inst.X, chunks=(-(-n // 4), d)).persist())

        def synchronously(r):
            with dask.config.set(scheduler="sync"):
                return run_dask(r)
        methods["dask-4-chunks"] = synchronously
    return group_rows("gamp", (n, d), dtype, methods, args.rounds)


def lowrank_group(n, d, dtype, args, backend):
    N, prior, noise_var = round(math.sqrt(n * d)), dn.Rademacher(), 0.5
    sp = amp.spiked_wigner(n=N, prior=prior, noise_var=noise_var, seed=0, dtype=dtype, backend=backend.name)

    def run(callback, max_iter, seed):
        amp.lowrank(sp.Y, prior, noise_var, truth=sp.X, max_iter=max_iter, tol=0.0, seed=seed, callback=callback)

    methods = {"floor": floor_method(sp.Y, backend, args.repeats),
               "spiked-wigner": lambda r: iteration_times(run, args.repeats, r)}
    return group_rows("lowrank", (N, N), dtype, methods, args.rounds)


@functools.lru_cache(maxsize=1)
def vamp_instance(n, d, backend_name):
    """The float64 VAMP instance at (n, d), drawn once for both dtypes (a QR of n x r and of d x r)."""
    return amp.teacher_student(d=d, alpha=n / d, prior=dn.BernoulliGauss(0.3), channel=dn.Linear(1e-3),
                               condition_number=10, seed=0, backend=backend_name)


def vamp_group(n, d, dtype, args, backend):
    prior, channel = dn.BernoulliGauss(0.3), dn.Linear(1e-3)
    inst = vamp_instance(n, d, backend.name)
    cast = lambda a: a.astype(dtype, copy=False)  # noqa: E731 (float32: the same instance, rounded)
    X, y, W, svd = cast(inst.X), cast(inst.y), cast(inst.W), tuple(cast(a) for a in inst.svd)

    def run(callback, max_iter, seed):
        amp.vamp(X, y, prior, channel, truth=W, max_iter=max_iter, tol=0.0, seed=seed, svd=svd, callback=callback)

    methods = {"floor": floor_method(X, backend, args.repeats),
               "svd-given": lambda r: iteration_times(run, args.repeats, r)}
    return group_rows("vamp", (n, d), dtype, methods, args.rounds)


def se_rows(args):
    prior, channel = dn.Gaussian(), dn.Sign()
    se.gamp(prior, channel, 1.0, max_iter=2)  # warm-up (quadrature rules, caches)
    seconds, iterations = [], []
    for alpha in SE_ALPHAS:
        t0 = time.perf_counter()
        curve = se.gamp(prior, channel, alpha, max_iter=500, tol=1e-10)
        seconds.append(time.perf_counter() - t0)
        iterations.append(curve.n_iter)
    return [{"bench": "se", "variant": "gaussian-sign", "shape": None, "dtype": "float64",
             "median_s": float(np.median(seconds)), "per_iteration_s": float(np.sum(seconds) / np.sum(iterations)),
             "alphas": list(SE_ALPHAS), "seconds": seconds, "iterations": iterations}]


def product(Z):
    """y = z1 z2 of Z (..., 1, 2): the label map of the Quadrature benchmark."""
    return Z[..., 0, 0] * Z[..., 0, 1]


def quadrature_rows(args, samples=2000):
    """Samples per second of denoisers.Quadrature's g_out for y = z1 z2 + N(0, 0.01), k = 2 (NumPy)."""
    if not hasattr(dn, "Quadrature"):
        return [{"bench": "quadrature", "variant": "skipped", "note": "denoisers.Quadrature does not exist yet"}]
    channel = dn.Quadrature(product, tokens=1, k=2, noise_var=0.01)
    rng = np.random.default_rng(0)
    omega = rng.standard_normal((samples, 1, 2))
    V = np.array([[0.5, 0.1], [0.1, 0.5]])
    y = product(omega) + 0.1 * rng.standard_normal(samples)
    times = call_times(lambda: channel.g_out(y, omega, V), lambda: None, args.repeats)
    median = float(np.median(times))
    return [{"bench": "quadrature", "variant": f"z1*z2 k=2 {channel.nodes}^2", "shape": [samples], "dtype": "float64",
             "median_s": median, "samples_per_s": samples / median}]


def memory_rows(n, d, dtypes):
    """benchmarks/peak_memory.py in a fresh process per (dtype, path)."""
    rows = []
    paths = ["fused", "blocks"] + (["dask"] if _has_dask() else [])
    for dtype in dtypes:
        for path in paths:
            out = subprocess.run([sys.executable, str(HERE / "peak_memory.py"), str(n), str(d), dtype, path],
                                 check=True, capture_output=True, text=True).stdout
            rows.append({"bench": "memory", "variant": path, "shape": [n, d], "dtype": dtype,
                         **json.loads(out.splitlines()[-1])})
    return rows


def _has_dask():
    try:
        import dask.array  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------- output


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def print_table(rows):
    print(f"\n{'bench':<10} {'variant':<16} {'shape':>11} {'dtype':>7} {'median ms':>10} {'floor ms':>9} "
          f"{'ratio':>6} {'others':>6}  note")
    for row in rows:
        shape = "x".join(map(str, row.get("shape") or [])) or "-"
        if row["bench"] == "memory":
            note = (f"run peak {row['run_over_B']:.3f} B = B + {row['run_extra_bytes'] / 2**20:.1f} MiB, rss "
                    f"{row['rss_over_B']:.3f} B, instance {row['instance_over_B']:.3f} B "
                    f"(bound {row['bound_over_B']:.3f} B, B = {row['X_bytes'] / 2**20:.0f} MiB)")
            print(f"{'memory':<10} {row['variant']:<16} {shape:>11} {row['dtype']:>7} {'':>34}  {note}")
            continue
        note = row.get("note", "")
        if row["bench"] == "floor":
            nbytes = math.prod(row["shape"]) * np.dtype(row["dtype"]).itemsize
            note = f"{nbytes / row['median_s'] / 1e9:.1f} GB/s"
        elif row["bench"] == "se":
            alphas = row["alphas"]
            note = f"{1e3 * row['per_iteration_s']:.2f} ms per SE iteration, alphas {alphas[0]}..{alphas[-1]}"
        elif row["bench"] == "quadrature":
            note = f"{row['samples_per_s']:.3g} samples/s" if "samples_per_s" in row else note
        load = row.get("others_cpu_load")
        print(f"{row['bench']:<10} {row['variant']:<16} {shape:>11} {row.get('dtype', ''):>7} "
              f"{_fmt(row.get('median_s') and 1e3 * row['median_s'], '10.2f'):>10} "
              f"{_fmt(row.get('floor_s') and 1e3 * row['floor_s'], '9.2f'):>9} {_fmt(row.get('ratio'), '6.2f'):>6} "
              f"{'' if load is None else f'{100 * load:5.0f}%':>6}  {note}")


def machine(backend):
    meta = {"backend": backend.name, "device": backend.device, "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "numba": numba.__version__, "numba_threads": numba.get_num_threads(), "numpy": np.__version__,
            "amp": amp.__version__, "python": sys.version.split()[0],
            **{k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS")}}
    if threadpool_info is not None:
        meta["blas"] = [{k: lib.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                        for lib in threadpool_info()]
    try:
        meta["threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run
        meta["threading_layer"] = None
    return meta


def parse_args(argv, shapes, out, doc):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=shapes, help="comma-separated NxD sample x dimension sizes")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls or iterations per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each group (methods take turns)")
    parser.add_argument("--largest", action="store_true", help="add the largest n = d that fits (GAMP, memory)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="numba's threads and BLAS's (threadpoolctl, where installed)")
    parser.add_argument("--out", type=pathlib.Path, default=out, help="JSON file to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = parser.parse_args(argv)
    try:
        args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
        args.dtypes = [np.dtype(t).name for t in args.dtypes.split(",")]
    except (ValueError, TypeError) as err:
        parser.error(f"--shapes must be NxD,NxD,... and --dtypes float64,float32: {err}")
    if any(len(s) != 2 or min(s) < 1 for s in args.shapes):
        parser.error(f"--shapes must be NxD with N, D >= 1, got {args.shapes}")
    args.only = set(args.only.split(","))
    if not args.only <= set(BENCHES):
        parser.error(f"--only must name benches among {','.join(BENCHES)}, got {','.join(sorted(args.only))}")
    if args.repeats < 1 or args.rounds < 1:
        parser.error("--repeats and --rounds must be >= 1")
    if args.out.exists() and not args.force:
        parser.error(f"{args.out} exists: pass --force to overwrite it, or another --out")
    return args


def main(argv=None, backend=Backend, shapes="1000x1000,4000x4000,8000x4000", out=OUT, doc=__doc__):
    """Run the suite; backend : a callable returning the Backend, called once the options are read."""
    args = parse_args(argv, shapes, out, doc)
    backend = backend()
    numba.set_num_threads(args.threads)
    if threadpool_limits is not None:
        threadpool_limits(args.threads, user_api="blas")
    started = time.perf_counter()
    shapes = list(args.shapes)
    largest = None
    if args.largest:
        side = int(math.sqrt(LARGEST_FRACTION * backend.free_bytes() / max(np.dtype(t).itemsize for t in args.dtypes)))
        largest = (side // 1000 * 1000 or side,) * 2
    rows = []

    def add(new):
        for row in new:
            print(f"  {row['bench']} {row['variant']} {row.get('shape')} {row.get('dtype', '')}: "
                  + (f"{1e3 * row['median_s']:.2f} ms" if "median_s" in row else "done")
                  + (f", ratio {row['ratio']:.2f}" if "ratio" in row else ""), flush=True)
        rows.extend(new)

    if "se" in args.only:
        add(se_rows(args))
    if "quadrature" in args.only:
        add(quadrature_rows(args))
    for n, d in shapes + ([largest] if largest else []):
        for dtype in args.dtypes:
            if "gamp" in args.only:
                add(gamp_group(n, d, dtype, args, backend))
            if (n, d) != largest:
                if "lowrank" in args.only:
                    add(lowrank_group(n, d, dtype, args, backend))
                if "vamp" in args.only:
                    add(vamp_group(n, d, dtype, args, backend))
    if "memory" in args.only and backend.cpu:
        add(memory_rows(*(largest or max(shapes, key=math.prod)), args.dtypes))
    print_table(rows)
    meta = {**machine(backend), "seconds": time.perf_counter() - started, "repeats": args.repeats,
            "rounds": args.rounds, "argv": sys.argv[1:] if argv is None else list(argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
