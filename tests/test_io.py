"""amp.io: results round-trip through JSON + NPZ without pickle, and a tampered or foreign file
fails to load with a ValueError naming it, without anything in it being executed."""
import hashlib
import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import amp
import denoisers as dn
import state_evolution as se
from amp.io import atomic_write, load_result, paths, save_result
from amp.results import IterationResult
from state_evolution.bayes_optimal import BayesOptimalResult, Branch

CONFIG = {"prior": "rademacher", "channel": "sign:noise_var=0.0", "d": 120, "alpha": 2.0}
SEEDS = {"instance": [0, 1, 0], "init": [0, 1, 1]}


def oscillating_instance(d=100, shift=0.2, seed=0):
    """(X, y, W*) of a linear model whose X has mean `shift`: undamped GAMP oscillates and blows up."""
    inst = amp.teacher_student(d=d, alpha=2.0, prior=dn.Gaussian(), channel=dn.Linear(0.01), seed=seed)
    X = inst.X + shift
    y = X @ inst.W[:, 0] / np.sqrt(d) + 0.1 * np.random.default_rng(seed + 1).standard_normal(X.shape[0])
    return X, y, inst.W


@pytest.fixture(scope="module")
def gamp_run():
    """A GAMP run with every kind of history entry: floats, and auto-damping's event dicts."""
    X, y, W = oscillating_instance()
    run = amp.gamp(X, y, dn.Gaussian(), dn.Linear(0.01), truth=W, max_iter=15, seed=1, auto_damping=True)
    assert run.history["events"], "the fixture should exercise the JSON history entries"
    return run


def _assert_same_iteration(a, b):
    assert (a.n_iter, a.converged, a.diverged, a.message) == (b.n_iter, b.converged, b.diverged, b.message)
    for name in ("W", "C"):
        if getattr(a, name) is None:
            assert getattr(b, name) is None
        else:
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    assert b.history.keys() == a.history.keys()
    for key, values in a.history.items():
        assert [type(v) for v in b.history[key]] == [type(v) for v in values], key
        if values and isinstance(values[0], dict):
            assert b.history[key] == values
        else:
            np.testing.assert_array_equal(np.asarray(b.history[key]), np.asarray(values), err_msg=key)


def test_gamp_run_round_trips_with_config_seeds_and_version(tmp_path, gamp_run):
    path = save_result(gamp_run, tmp_path / "run", config=CONFIG, seeds=SEEDS)
    assert path == tmp_path / "run.json" and (tmp_path / "run.npz").exists()
    saved = load_result(tmp_path / "run")
    assert saved.kind == "iteration" and saved.config == CONFIG and saved.seeds == SEEDS
    assert saved.amp_version == amp.__version__ and saved.path == path
    _assert_same_iteration(gamp_run, saved.result)
    assert load_result(tmp_path / "run.npz").config == CONFIG  # either file names the result


def test_se_curve_round_trips(tmp_path):
    curve = se.gamp(dn.Rademacher(), dn.Sign(), alpha=1.2, max_iter=6)
    save_result(curve, tmp_path / "se")
    _assert_same_iteration(curve, load_result(tmp_path / "se.json").result)


def test_matrix_order_parameters_round_trip_as_arrays(tmp_path):
    """k > 1 histories hold (k, k) arrays per iteration; they come back as arrays, not floats."""
    m = [np.eye(2) * t for t in range(4)]
    result = IterationResult(W=np.ones((5, 2)), C=np.eye(2), history={"m": m, "residual": [np.inf, 1.0, 0.5, 0.1]},
                             n_iter=3, message="reached max_iter = 3")
    save_result(result, tmp_path / "k2")
    _assert_same_iteration(result, load_result(tmp_path / "k2").result)


def _bayes_optimal_result():
    """A small BayesOptimalResult, built directly: the codec is tested, not the SE."""
    alphas = np.array([0.5, 1.0, 1.5])
    branch = lambda q: Branch(q=q, q_hat=2 * q, mse=1 - q, gen_error=(1 - q) / 2, free_entropy=np.array(  # noqa: E731
        [-0.5, -0.2, np.inf]))
    low, high = branch(np.array([0.0, 0.1, 0.2])), branch(np.array([0.9, 0.95, 1.0]))
    return BayesOptimalResult(alphas=alphas, uninformative=low, informative=high,
                              bayes_branch=np.array(["uninformative", "uninformative", "informative"]),
                              mse=np.array([1.0, 0.9, 0.0]), gen_error=np.array([0.5, 0.45, 0.0]),
                              free_entropy=np.array([-0.5, -0.2, np.inf]), alpha_alg=1.25, alpha_it=1.1,
                              transition="first-order", notes=["a note"])


def test_bayes_optimal_result_round_trips(tmp_path):
    bo = _bayes_optimal_result()
    save_result(bo, tmp_path / "bo", config={"alphas": bo.alphas.tolist()})
    back = load_result(tmp_path / "bo").result
    assert isinstance(back, BayesOptimalResult)
    for name in ("alphas", "bayes_branch", "mse", "gen_error", "free_entropy"):
        np.testing.assert_array_equal(getattr(back, name), getattr(bo, name))
    for branch in ("uninformative", "informative"):
        for name in ("q", "q_hat", "mse", "gen_error", "free_entropy"):
            np.testing.assert_array_equal(getattr(getattr(back, branch), name), getattr(getattr(bo, branch), name))
    assert (back.alpha_weak, back.alpha_alg, back.alpha_it) == (None, 1.25, 1.1)
    assert (back.transition, back.notes) == ("first-order", ["a note"])


def test_saved_files_are_plain_json_and_npz(tmp_path, gamp_run):
    save_result(gamp_run, tmp_path / "run", config=CONFIG, seeds=SEEDS)
    meta = json.loads((tmp_path / "run.json").read_text())  # the standard library reads it
    assert meta["config"] == CONFIG and meta["seeds"] == SEEDS and meta["amp_version"] == amp.__version__
    with np.load(tmp_path / "run.npz", allow_pickle=False) as npz:  # NumPy reads it, without pickle
        np.testing.assert_array_equal(npz["history.mse"], gamp_run.history["mse"])
        assert set(npz.files) == set(meta["arrays"])


def test_an_existing_result_is_not_overwritten_unless_asked(tmp_path, gamp_run):
    save_result(gamp_run, tmp_path / "run", config=CONFIG)
    before = (tmp_path / "run.json").read_bytes()
    with pytest.raises(FileExistsError, match="run.json"):
        save_result(gamp_run, tmp_path / "run", config={"other": 1})
    assert (tmp_path / "run.json").read_bytes() == before
    save_result(gamp_run, tmp_path / "run", config={"other": 1}, overwrite=True)
    assert load_result(tmp_path / "run").config == {"other": 1}


@pytest.mark.parametrize("config", [{"f": print}, {"x": float("nan")}, {"x": np.ones(2)}],
                         ids=["function", "nan", "array"])
def test_config_must_be_strict_json(tmp_path, gamp_run, config):
    with pytest.raises(ValueError, match="config"):
        save_result(gamp_run, tmp_path / "run", config=config)
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_no_temporary_and_can_refuse_to_replace(tmp_path):
    atomic_write(tmp_path / "a.txt", b"one")
    atomic_write(tmp_path / "a.txt", b"two")
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / "a.txt", b"three", overwrite=False)
    assert (tmp_path / "a.txt").read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# ------------------------------------------------------------------------------ tampering


def _saved(tmp_path, gamp_run):
    save_result(gamp_run, tmp_path / "run", config=CONFIG, seeds=SEEDS)
    return paths(tmp_path / "run")


def _rewrite_npz(json_path, npz_path, members):
    """Replace the NPZ by a zip of raw `members` and record its hash, as a forger would."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    npz_path.write_bytes(buffer.getvalue())
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    json_path.write_text(json.dumps(meta))


def _members_as_listed(json_path):
    """NPZ members of the arrays the metadata lists, each the right dtype and shape (zeros)."""
    meta = json.loads(json_path.read_text())
    return {f"{name}.npy": _npy(np.zeros(spec["shape"], dtype=spec["dtype"])) for name, spec in meta["arrays"].items()}


def _npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


class _Payload:
    """Unpickling this creates the file `marker`: proof that a load executed code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_changed_npz_bytes_fail_the_recorded_hash(tmp_path, gamp_run):
    json_path, npz_path = _saved(tmp_path, gamp_run)
    data = bytearray(npz_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"run\.npz.*SHA-256"):
        load_result(json_path)


def test_a_pickle_in_the_npz_is_refused_and_not_executed(tmp_path, gamp_run):
    json_path, npz_path = _saved(tmp_path, gamp_run)
    marker = tmp_path / "executed"
    members = _members_as_listed(json_path)
    members["W.npy"] = _npy(np.array([_Payload(marker)], dtype=object))  # an object array is a pickle
    _rewrite_npz(json_path, npz_path, members)
    with pytest.raises(ValueError, match=r"run\.npz"):
        load_result(json_path)
    assert not marker.exists()
    # and the file really was a working pickle: unpickling it on purpose runs the payload
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def test_an_npz_with_arrays_the_metadata_does_not_list_is_refused(tmp_path, gamp_run):
    json_path, npz_path = _saved(tmp_path, gamp_run)
    members = _members_as_listed(json_path)
    members["extra.npy"] = _npy(np.zeros(3))
    _rewrite_npz(json_path, npz_path, members)
    with pytest.raises(ValueError, match=r"run\.npz.*extra"):
        load_result(json_path)


def _edit(meta, path, value):
    *parents, last = path
    for key in parents:
        meta = meta[key]
    meta[last] = value


@pytest.mark.parametrize("path, value, match", [
    (("fields", "n_iter"), "15", "n_iter"),
    (("fields", "converged"), 1, "converged"),
    (("fields", "message"), ["a"], "message"),
    (("fields", "extra"), 1, "fields"),
    (("kind",), "pickle", "kind"),
    (("format",), "other", "format"),
    (("format_version",), 2, "format_version"),
    (("history", "mse"), "object", "mse"),
    (("history_json", "events"), "not a list", "events"),
    (("arrays", "W", "dtype"), "|O", "dtype"),
    (("arrays", "W", "shape"), [-1, 1], "shape"),
    (("npz_sha256",), 12, "npz_sha256"),
    (("surprise",), {}, "unexpected"),
], ids=lambda v: "-".join(v) if isinstance(v, tuple) else None)
def test_json_with_unexpected_types_or_keys_is_refused(tmp_path, gamp_run, path, value, match):
    json_path, _ = _saved(tmp_path, gamp_run)
    meta = json.loads(json_path.read_text())
    _edit(meta, path, value)
    json_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match) as err:
        load_result(json_path)
    assert "run.json" in str(err.value) or "run.npz" in str(err.value)


@pytest.mark.parametrize("text, match", [
    ('{"format": NaN}', "NaN"),
    ('{"format": 1, "format": 2}', "duplicate"),
    ("\x00\x01 not json", "JSON"),
    ("[1, 2, 3]", "object"),
], ids=["nan", "duplicate-keys", "binary", "array"])
def test_json_that_is_not_strict_is_refused(tmp_path, gamp_run, text, match):
    json_path, _ = _saved(tmp_path, gamp_run)
    json_path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        load_result(json_path)
    assert "run.json" in str(err.value)


def test_missing_files_are_a_value_error_naming_them(tmp_path, gamp_run):
    json_path, npz_path = _saved(tmp_path, gamp_run)
    npz_path.unlink()
    with pytest.raises(ValueError, match=r"run\.npz"):
        load_result(json_path)
    with pytest.raises(ValueError, match=r"nothing\.json"):
        load_result(tmp_path / "nothing")
