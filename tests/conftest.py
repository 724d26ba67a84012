"""Shared fixtures: the array namespaces every backend-generic test runs on.

NumPy and PyTorch (CPU) always; CuPy when it and a CUDA device are present (marked gpu).
PyTorch fails loudly when NumPy is called on its tensors, which is what proves genericity.
"""
import importlib.util
import pathlib

import pytest

from amp.backend import backend_namespace

DEMOS = pathlib.Path(__file__).parents[1] / "demos"


def _cupy_usable():
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


BACKENDS = [
    "numpy",
    pytest.param("torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                    reason="torch not installed")),
    pytest.param("cupy", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not _cupy_usable(), reason="needs CuPy and a GPU")]),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Name of a backend: 'numpy', 'torch' or 'cupy'."""
    return request.param


@pytest.fixture
def xp(backend):
    """The array-API namespace of `backend`."""
    return backend_namespace(backend)


@pytest.fixture(scope="module")
def single_threaded_blas():
    """One BLAS thread for a module of many mid-sized BLAS calls: on a shared 2-core machine
    OpenBLAS's threads spin against other processes (test_lowrank.py and test_vamp.py: 550 s with two
    threads under load, 58 s with one). Results change by rounding only. Needs threadpoolctl (a
    scikit-learn dependency); without it, a no-op."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def load_demo():
    """load_demo(name) -> the module demos/<name>.py (its main(argv) runs the demo)."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name, DEMOS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
