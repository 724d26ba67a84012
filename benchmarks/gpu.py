"""The benchmark suite of benchmarks/suite.py on a CUDA GPU, with CuPy arrays: the same table, each
iteration over the time to read its matrix once from device memory (one cuBLAS X @ w, same run).

    python benchmarks/gpu.py [the suite's options; default --shapes 4000x4000,8000x4000,20000x20000]

Goal on an H100-class GPU: one GAMP iteration at n = d = 20000 in float32 within 1.5x of that floor.
GAMP runs on CuPy in row blocks: of amp.gamp.BLOCK_BYTES ('row-blocks') and one block of all n
rows ('one-block': X What and X^T g as two products over the whole X). Arrays stay on the device;
each iteration moves only its recorded statistics to the host, in one transfer. The memory rows are
CPU-only (tracemalloc). Without CuPy or a CUDA device it exits with status 2 and says so.
"""
import pathlib
import sys

from suite import Backend, main

OUT = pathlib.Path(__file__).parent / "output" / "gpu.json"
SHAPES = "4000x4000,8000x4000,20000x20000"


def cupy_backend():
    """The suite's Backend on the current CUDA device, or exit(2) with the reason there is none."""
    try:
        import cupy
    except ImportError:
        print("benchmarks/gpu.py needs CuPy and a CUDA GPU: pip install -e '.[gpu]' on a machine with one "
              "(CuPy is not installed here)", file=sys.stderr)
        sys.exit(2)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as err:
        count, why = 0, f": {err}"
    else:
        why = ""
    if count == 0:
        print(f"benchmarks/gpu.py found no CUDA device{why}", file=sys.stderr)
        sys.exit(2)
    device = cupy.cuda.Device()
    name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
    return Backend("cupy", sync=device.synchronize, free_bytes=lambda: cupy.cuda.runtime.memGetInfo()[0],
                   device=name.decode() if isinstance(name, bytes) else str(name))


if __name__ == "__main__":
    main(backend=cupy_backend, shapes=SHAPES, out=OUT, doc=__doc__)
