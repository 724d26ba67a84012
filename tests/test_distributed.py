"""amp.distributed on a real dask.distributed LocalCluster: GAMP on a Dask X chunked by rows gives
the NumPy iterates, instances are drawn chunk by chunk on the workers, and a sweep computed on the
cluster saves every point once and resumes after an interruption without recomputing any."""
import json

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402

import amp  # noqa: E402
import denoisers as dn  # noqa: E402
from amp import sweep  # noqa: E402

#: the two paths add the same products in another order (per chunk, then over chunks): rounding
#: differences of ~1e-15 that GAMP's contraction keeps far below 1e-10 over these iterations
TOL = 1e-10
CONFIG = sweep.SweepConfig(prior="rademacher", channel="sign", d=120, max_iter=10, tol=0.0, init_overlap=0.05)
ALPHAS = [1.2, 2.0]
REPLICATES = [0, 1]
POINTS = [sweep.point_name(a, s) for a in ALPHAS for s in [None] + REPLICATES]


class TokenSum(dn.OutputDenoiser):
    """A test channel over L = 3 tokens: y = sum_l z_l (k = 1)."""

    tokens = 3

    def sample(self, Z, rng):
        return Z[:, :, 0].sum(axis=1)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process talking TCP on 127.0.0.1 (tasks and results are
    serialised as between machines; startup in milliseconds), the current client."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def iterates(X, y, prior, channel, truth, **options):
    """The GAMP result and its What^t, Chat^t for t = 1..max_iter."""
    seen = []
    run = amp.gamp(X, y, prior, channel, truth=truth, max_iter=12, tol=0.0, seed=1,
                   callback=lambda t, W, C: seen.append((np.array(W), np.array(C))), **options)
    return run, seen


@pytest.mark.parametrize("fused", [None, False], ids=["fused-where-it-applies", "row-blocks"])
@pytest.mark.parametrize("prior, channel", [(dn.Gaussian(), dn.Sign()), (dn.Gaussian(), dn.Linear(0.1))],
                         ids=["sign-perceptron", "linear"])
def test_dask_gamp_gives_the_numpy_iterates(client, prior, channel, fused):
    inst = amp.teacher_student(d=200, alpha=2.0, prior=prior, channel=channel, seed=3)
    X = da.from_array(inst.X, chunks=(90, 200))  # 5 row chunks, the last one shorter
    ref, ref_seen = iterates(inst.X, inst.y, prior, channel, inst.W, fused=fused)
    run, seen = iterates(X, inst.y, prior, channel, inst.W, fused=fused)
    assert isinstance(run, amp.IterationResult) and isinstance(run.W, np.ndarray) and run.W.dtype == np.float64
    assert run.n_iter == ref.n_iter == len(seen) == 12 and run.message == ref.message
    for (W, C), (W_ref, C_ref) in zip(seen, ref_seen):
        np.testing.assert_allclose(W, W_ref, rtol=0, atol=TOL)
        np.testing.assert_allclose(C, C_ref, rtol=0, atol=TOL)
    for key in ("mse", "m", "q"):
        np.testing.assert_allclose(run.history[key], ref.history[key], rtol=0, atol=TOL)


def test_dask_gamp_keeps_float32_and_runs_on_the_local_threads_without_a_cluster():
    inst = amp.teacher_student(d=150, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=4, dtype="float32")
    with dask.config.set(scheduler="threads"):
        run, _ = iterates(da.from_array(inst.X, chunks=(100, 150)), inst.y, dn.Gaussian(), dn.Sign(), inst.W)
    ref, _ = iterates(inst.X, inst.y, dn.Gaussian(), dn.Sign(), inst.W)
    assert run.W.dtype == np.float32
    np.testing.assert_allclose(run.W, ref.W, rtol=0, atol=1e-4)  # float32 rounding, ~1e-7 per sum


def test_a_dask_instance_is_drawn_on_the_workers_as_the_chunked_numpy_instance(client):
    chunk_bytes = 40 * 3 * 100 * 8  # 40 samples of L = 3 tokens per chunk
    make = lambda backend: amp.teacher_student(d=100, alpha=2.0, prior=dn.Gaussian(), channel=TokenSum(),  # noqa: E731
                                               seed=[7, 1], tokens=3, backend=backend, chunk_bytes=chunk_bytes)
    local, remote = make("numpy"), make("dask")
    assert remote.X.chunks == ((40, 40, 40, 40, 40), (3,), (100,))
    assert len(client.who_has()) >= 5  # the chunks are held by the workers
    np.testing.assert_array_equal(remote.X.compute(), local.X)
    assert isinstance(remote.y, np.ndarray) and isinstance(remote.W, np.ndarray)
    np.testing.assert_allclose(remote.y, local.y, rtol=1e-13)  # X W / sqrt(d) summed per chunk
    np.testing.assert_array_equal(remote.W, local.W)
    again = make("numpy")
    np.testing.assert_array_equal(again.X, local.X)  # a chunked instance is reproducible from its seed


def test_an_instance_above_the_chunk_budget_is_drawn_in_chunks_reproducibly():
    small = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=5)
    chunked = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=5,
                                  chunk_bytes=30 * 50 * 8)
    same = amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=5,
                               chunk_bytes=30 * 50 * 8)
    np.testing.assert_array_equal(chunked.X, same.X)
    np.testing.assert_array_equal(chunked.W, small.W)  # the teacher still comes from the instance's stream
    assert not np.array_equal(chunked.X, small.X)
    x = chunked.X.ravel()
    assert abs(x.mean()) < 5 / np.sqrt(x.size) and abs(x.var() - 1) < 5 * np.sqrt(2 / x.size)
    with pytest.raises(ValueError, match="chunk_bytes"):
        amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), chunk_bytes=0)
    with pytest.raises(ValueError, match="dask"):
        amp.teacher_student(d=50, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.1), backend="dask",
                            condition_number=10)


def test_a_dask_x_is_checked_naming_the_argument(client):
    inst = amp.teacher_student(d=40, alpha=2.0, prior=dn.Gaussian(), channel=dn.Sign(), seed=0)
    run = lambda X, y: amp.gamp(X, y, dn.Gaussian(), dn.Sign(), max_iter=2)  # noqa: E731
    with pytest.raises(ValueError, match=r"X must be chunked by rows only.*rechunk\(\{1: -1\}\)"):
        run(da.from_array(inst.X, chunks=(40, 20)), inst.y)
    with pytest.raises(ValueError, match="y must be a NumPy array"):
        run(da.from_array(inst.X, chunks=(40, 40)), da.from_array(inst.y))
    bad = inst.X.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        run(da.from_array(bad, chunks=(40, 40)), inst.y)


# ---------------------------------------------------------------------------------- sweeps


def logged(folder):
    return [json.loads(line)["point"] for line in (folder / "computed.jsonl").read_text().splitlines()]


def assert_same_points(a, b):
    """The same points with the same numbers, to TOL (workers may split a fused sweep otherwise)."""
    assert a.se.keys() == b.se.keys() and a.amp.keys() == b.amp.keys()
    for key in list(a.se) + list(a.amp):
        x, y = (a.se if key in a.se else a.amp)[key], (b.se if key in b.se else b.amp)[key]
        assert (x.config, x.seeds) == (y.config, y.seeds)
        if x.result.W is not None:
            np.testing.assert_allclose(x.result.W, y.result.W, rtol=0, atol=TOL)
        for name in ("mse", "q"):
            np.testing.assert_allclose(x.result.history[name], y.result.history[name], rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sweep computed here, without a cluster."""
    return sweep.run_sweep(tmp_path_factory.mktemp("reference"), CONFIG, ALPHAS, REPLICATES, progress=False)


def test_a_sweep_on_the_cluster_saves_each_point_once(client, tmp_path, reference):
    computed = []
    result = sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, client=client,
                             on_point=computed.append)
    assert sorted(computed) == sorted(logged(tmp_path)) == sorted(POINTS)
    assert sorted(p.name for p in (tmp_path / "points").glob("*.json")) == sorted(f"{p}.json" for p in POINTS)
    assert_same_points(result, reference)


def test_an_interrupted_cluster_sweep_resumes_without_recomputing_or_losing_points(client, tmp_path, reference):
    first = []

    def interrupt_after_two(name):
        first.append(name)
        if len(first) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, client=client,
                        on_point=interrupt_after_two)
    assert sorted(logged(tmp_path)) == sorted(first)  # the finished points are on disk, nothing else
    resumed = []
    result = sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, client=client,
                             on_point=resumed.append)
    assert sorted(first + resumed) == sorted(POINTS)  # each point computed exactly once
    assert sorted(logged(tmp_path)) == sorted(POINTS)
    assert_same_points(result, reference)
    assert not list(tmp_path.rglob("*.tmp"))
