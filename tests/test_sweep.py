"""amp.sweep: each point saved as it finishes, an interrupted sweep resumed without losing or
recomputing anything, points regenerated from their saved seeds, foreign folders refused."""
import fcntl
import json
import os
import threading
import time

import numpy as np
import pytest

import amp
from amp import sweep
from amp.io import load_result

CONFIG = sweep.SweepConfig(prior="rademacher", channel="sign", d=150, max_iter=12, tol=0.0, init_overlap=0.05)
ALPHAS = [1.2, 2.0]
REPLICATES = [0, 1]
POINTS = [sweep.point_name(a, s) for a in ALPHAS for s in [None] + REPLICATES]


def logged(folder):
    """The points of computed.jsonl, in the order they were computed."""
    path = folder / "computed.jsonl"
    return [json.loads(line)["point"] for line in path.read_text().splitlines()] if path.exists() else []


def assert_same_sweeps(a, b):
    """Same points with the same numbers (the creation times aside)."""
    assert a.se.keys() == b.se.keys() and a.amp.keys() == b.amp.keys()
    for key in list(a.se) + list(a.amp):
        x, y = (a.se if key in a.se else a.amp)[key], (b.se if key in b.se else b.amp)[key]
        assert (x.config, x.seeds) == (y.config, y.seeds)
        for name in ("W", "C"):
            np.testing.assert_array_equal(getattr(x.result, name), getattr(y.result, name))
        assert x.result.history == y.result.history and x.result.message == y.result.message


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted sweep."""
    return sweep.run_sweep(tmp_path_factory.mktemp("reference"), CONFIG, ALPHAS, REPLICATES, progress=False)


def test_a_sweep_saves_every_point_with_its_configuration_and_seeds(reference):
    folder = reference.folder
    assert logged(folder) == POINTS
    assert sorted(p.name for p in (folder / "points").glob("*.json")) == sorted(f"{p}.json" for p in POINTS)
    saved = load_result(folder / "points" / "amp_alpha=2.0_seed=1")
    assert saved.config["sweep"] == CONFIG.to_dict() and saved.config["alpha"] == 2.0
    assert saved.config["n"] == 300 and saved.seeds == {"instance": [0, 1, 0], "init": [0, 1, 1]}
    assert saved.amp_version == amp.__version__
    assert reference.alphas == ALPHAS and len(reference.runs(1.2)) == 2


def test_a_point_is_regenerated_exactly_from_its_saved_record(reference):
    saved = reference.amp[(1.2, 1)]
    config = sweep.SweepConfig(**saved.config["sweep"])
    prior, channel = config.denoisers()
    inst = amp.teacher_student(config.d, saved.config["alpha"], prior, channel, seed=saved.seeds["instance"])
    run = amp.gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=config.max_iter, tol=config.tol,
                   init_overlap=config.init_overlap, seed=saved.seeds["init"])
    assert run.history == saved.result.history


def test_rerunning_a_finished_sweep_computes_nothing(reference):
    before = logged(reference.folder)
    again = sweep.run_sweep(reference.folder, CONFIG, ALPHAS, REPLICATES, progress=False,
                            on_point=lambda name: pytest.fail(f"{name} computed twice"))
    assert logged(reference.folder) == before
    assert_same_sweeps(again, reference)


def test_an_interrupted_sweep_resumes_where_it_stopped_and_loses_nothing(tmp_path, reference):
    seen = []

    def interrupt_after_three(name):  # as a Ctrl-C would, while the fourth point is due
        seen.append(name)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, on_point=interrupt_after_three)
    assert logged(tmp_path) == POINTS[:3]
    resumed = []
    result = sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, on_point=resumed.append)
    assert resumed == POINTS[3:]
    assert sorted(logged(tmp_path)) == sorted(POINTS)  # each point computed exactly once
    assert_same_sweeps(result, reference)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_point_locked_by_another_run_is_waited_for_not_computed_twice(tmp_path, reference):
    """Another run holds the lock of one point: this run computes the others first, then waits;
    when the other run finishes that point (here: releases it unfinished), this run takes it."""
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], [], progress=False)  # the folder exists
    busy = sweep.point_name(1.2, 0)
    fd = os.open(tmp_path / ".locks" / f"{busy}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    threading.Timer(1.0, os.close, (fd,)).start()  # closing the file drops the lock
    order = []
    start = time.monotonic()
    result = sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False, on_point=order.append)
    assert order[-1] == busy and time.monotonic() - start >= 1.0
    assert sorted(logged(tmp_path)) == sorted(POINTS)
    assert_same_sweeps(result, reference)


def test_a_grid_can_grow_in_the_same_folder(tmp_path, reference):
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], REPLICATES[:1], progress=False)
    result = sweep.run_sweep(tmp_path, CONFIG, ALPHAS, REPLICATES, progress=False)
    assert sorted(logged(tmp_path)) == sorted(POINTS)
    assert_same_sweeps(result, reference)


def test_a_folder_of_another_configuration_is_refused_unless_forced(tmp_path):
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], [], progress=False)
    saved = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    other = sweep.SweepConfig(**{**CONFIG.to_dict(), "d": 200, "channel": "sign:noise_var=0.1"})
    with pytest.raises(sweep.ConfigMismatch, match=r"channel = .* there, .* here, d = 150 there, 200 here"):
        sweep.run_sweep(tmp_path, other, ALPHAS[:1], [0], progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == saved  # nothing touched
    result = sweep.run_sweep(tmp_path, other, ALPHAS[:1], [0], progress=False, force=True)
    assert result.config == other and set(result.amp) == {(1.2, 0)}
    assert logged(tmp_path) == [sweep.point_name(1.2), sweep.point_name(1.2, 0)]


def test_the_same_configuration_written_differently_is_the_same_sweep(tmp_path):
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], [], progress=False)
    spelled_out = sweep.SweepConfig(**{**CONFIG.to_dict(), "prior": "rademacher", "channel": "sign:noise_var=0"})
    assert spelled_out == CONFIG
    sweep.run_sweep(tmp_path, spelled_out, ALPHAS[:1], [], progress=False)


def test_a_tampered_or_misplaced_point_makes_loading_the_sweep_fail(tmp_path):
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], [0], progress=False)
    points = tmp_path / "points"
    for suffix in (".json", ".npz"):  # a point filed under another point's name
        os.replace(points / f"amp_alpha=1.2_seed=0{suffix}", points / f"amp_alpha=1.2_seed=7{suffix}")
    with pytest.raises(ValueError, match=r"seed=7\.json"):
        sweep.load_sweep(tmp_path)
    (points / "amp_alpha=1.2_seed=7.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"seed=7\.npz"):
        sweep.load_sweep(tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"prior": "bernoulli-gauss"}, "rho"), ({"channel": "door:width=-1"}, "width"), ({"d": 0}, r"\bd\b"),
    ({"max_iter": -1}, "max_iter"), ({"tol": float("nan")}, "tol"), ({"damping": 0.0}, "damping"),
    ({"init_overlap": 2.0}, "init_overlap"), ({"seed": -1}, "seed"), ({"auto_damping": 1}, "auto_damping"),
])
def test_sweep_config_rejects_bad_values_naming_them(change, match):
    with pytest.raises(ValueError, match=match):
        sweep.SweepConfig(**{**CONFIG.to_dict(), **change})


def test_run_sweep_rejects_bad_grids(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        sweep.run_sweep(tmp_path, CONFIG, [-1.0], [], progress=False)
    with pytest.raises(ValueError, match="replicate"):
        sweep.run_sweep(tmp_path, CONFIG, [1.0], [-2], progress=False)
    se_only = sweep.SweepConfig(prior="rademacher", channel="sign")
    with pytest.raises(ValueError, match=r"\bd\b"):
        sweep.run_sweep(tmp_path, se_only, [1.0], [0], progress=False)
    assert not list(tmp_path.iterdir())  # nothing written for a rejected sweep


def test_the_progress_bar_counts_the_points_to_compute(tmp_path, capsys):
    sweep.run_sweep(tmp_path, CONFIG, ALPHAS[:1], REPLICATES, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "point" in err
