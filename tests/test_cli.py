"""The amp-toolkit command line, end to end: a sweep killed midway (SIGKILL) and rerun equals an
uninterrupted one and computes no point twice; concurrent runs share a folder without corrupting
it; help, errors, the other commands and figures regenerated from the saved files alone.

Subprocesses are used where the process boundary is the point (the console script, SIGKILL,
concurrency); everything else calls amp.cli.main in-process.
"""
import collections
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import pytest

from amp import cli, specs, sweep
from amp.io import load_result
from test_sweep import assert_same_sweeps, logged

PYTHON_M_AMP = [sys.executable, "-m", "amp"]
RUN = ["run", "--prior", "rademacher", "--channel", "sign", "--alpha", "1.2", "2.0", "--d", "200", "--seeds", "2",
       "--iterations", "12", "--tol", "0", "--init-overlap", "0.05", "--no-progress"]
POINTS = [sweep.point_name(a, s) for a in (1.2, 2.0) for s in (None, 0, 1)]


def run_cli(*args, env=None):
    return subprocess.run(PYTHON_M_AMP + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted `run`, as a subprocess."""
    folder = tmp_path_factory.mktemp("reference")
    done = run_cli(*RUN, "--out", folder)
    assert done.returncode == 0, done.stderr
    return folder


def test_a_sweep_killed_midway_resumes_to_the_uninterrupted_results(tmp_path, reference):
    killed = run_cli(*RUN, "--out", tmp_path, env={cli.KILL_AFTER: "2"})
    assert killed.returncode == -signal.SIGKILL
    assert logged(tmp_path) == POINTS[:2]
    assert len(list((tmp_path / "points").glob("*.json"))) == 2

    resumed = run_cli(*RUN, "--out", tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert logged(tmp_path)[2:] == POINTS[2:]
    assert collections.Counter(logged(tmp_path)) == collections.Counter(POINTS)  # no point computed twice
    assert_same_sweeps(sweep.load_sweep(tmp_path), sweep.load_sweep(reference))
    assert (tmp_path / cli.SWEEP_FIGURE).read_bytes()[:4] == b"\x89PNG"
    assert "alpha" in resumed.stdout and "SE mse" in resumed.stdout


def test_concurrent_runs_on_one_folder_compute_each_point_once(tmp_path):
    args = [*RUN[:RUN.index("--d")], "--d", "600", "--seeds", "3", *RUN[RUN.index("--iterations"):]]  # ~0.3 s a point
    alone = run_cli(*args, "--out", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    shared = tmp_path / "shared"
    procs = [subprocess.Popen(PYTHON_M_AMP + args + ["--out", str(shared)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    points = [sweep.point_name(a, s) for a in (1.2, 2.0) for s in (None, 0, 1, 2)]
    assert collections.Counter(logged(shared)) == collections.Counter(points)
    assert_same_sweeps(sweep.load_sweep(shared), sweep.load_sweep(tmp_path / "alone"))


def test_the_console_script_is_installed_and_lists_the_denoisers():
    script = shutil.which("amp-toolkit") or pathlib.Path(sys.executable).with_name("amp-toolkit")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for kind in ("prior", "channel"):
        assert all(name in done.stdout for name in specs.available(kind))


@pytest.mark.parametrize("command", ["run", "se", "bayes-optimal", "plot"])
def test_help_of_every_command_lists_the_priors_and_channels_with_their_parameters(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for line in (specs.describe("prior") + "\n" + specs.describe("channel")).splitlines():
        assert line.strip() in text
    assert "bernoulli-gauss:rho,mean=0.0,var=1.0" in text and "sign:noise_var=0.0" in text


@pytest.mark.parametrize("prior, channel, match", [
    ("bernoulli-gauss:rho=1.5", "sign", "rho must lie in"),
    ("bernoulli-gauss", "sign", "needs parameter.*rho"),
    ("gaussian:sigma=1", "sign", "no parameter 'sigma'"),
    ("gaussian:var=nan", "sign", "var must be"),
    ("gaussian", "door:width=-1", "width"),
    ("gaussian", "probit", "unknown channel 'probit'; available: linear, sign"),
])
def test_bad_specs_exit_2_with_an_error_naming_the_parameter(tmp_path, capsys, prior, channel, match):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--prior", prior, "--channel", channel, "--alpha", "1", "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def test_a_folder_of_another_configuration_is_refused_unless_forced(tmp_path, capsys, reference):
    folder = tmp_path / "copy"
    shutil.copytree(reference, folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    other = [a if a != "200" else "300" for a in RUN]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*other, "--out", str(folder)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "d = 200 there, 300 here" in err and "--force" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    assert cli.main([*other, "--out", str(folder), "--force"]) == 0
    assert sweep.load_sweep(folder).config.d == 300


def test_ctrl_c_saves_the_finished_points_and_a_rerun_completes(tmp_path, capsys, monkeypatch, reference):
    compute, calls = sweep._compute, []

    def interrupted_on_the_fourth_point(*args):
        calls.append(args)
        if len(calls) == 4:
            raise KeyboardInterrupt  # mid-point, as a Ctrl-C during the computation
        return compute(*args)

    monkeypatch.setattr(sweep, "_compute", interrupted_on_the_fourth_point)
    assert cli.main([*RUN, "--out", str(tmp_path)]) == 130
    assert "run the same command again" in capsys.readouterr().err
    assert logged(tmp_path) == POINTS[:3]
    monkeypatch.setattr(sweep, "_compute", compute)
    assert cli.main([*RUN, "--out", str(tmp_path)]) == 0
    assert collections.Counter(logged(tmp_path)) == collections.Counter(POINTS)
    assert_same_sweeps(sweep.load_sweep(tmp_path), sweep.load_sweep(reference))


def test_plot_redraws_the_same_figure_from_the_saved_results(tmp_path, reference):
    folder = tmp_path / "copy"
    shutil.copytree(reference, folder)
    original = (folder / cli.SWEEP_FIGURE).read_bytes()
    (folder / cli.SWEEP_FIGURE).unlink()
    assert cli.main(["plot", str(folder)]) == 0
    assert (folder / cli.SWEEP_FIGURE).read_bytes() == original


def test_se_and_bayes_optimal_commands_save_reload_and_plot(tmp_path, capsys):
    common = ["--prior", "gaussian", "--channel", "linear:noise_var=0.1"]
    assert cli.main(["se", *common, "--alpha", "0.5", "1.5", "--iterations", "20", "--out", str(tmp_path),
                     "--no-progress"]) == 0
    assert sorted(sweep.load_sweep(tmp_path).se) == [0.5, 1.5]
    bo_args = ["bayes-optimal", *common, "--alpha-range", "0.5", "1.5", "3", "--out", str(tmp_path)]
    assert cli.main(bo_args) == 0
    saved = load_result(tmp_path / cli.BAYES_OPTIMAL)
    assert saved.kind == "bayes_optimal" and saved.config["alphas"] == [0.5, 1.0, 1.5]
    assert saved.config["channel"] == "linear:noise_var=0.1"
    stamp = (tmp_path / f"{cli.BAYES_OPTIMAL}.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(bo_args) == 0
    assert "holds this result already" in capsys.readouterr().out
    assert (tmp_path / f"{cli.BAYES_OPTIMAL}.json").stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit) as exit_:
        cli.main([*bo_args[:-5], "--alpha", "0.5", "2.0", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--force" in capsys.readouterr().err
    for name in (cli.SWEEP_FIGURE, f"{cli.BAYES_OPTIMAL}.png"):
        (tmp_path / name).unlink()
    assert cli.main(["plot", str(tmp_path)]) == 0
    for name in (cli.SWEEP_FIGURE, f"{cli.BAYES_OPTIMAL}.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_plot_of_a_folder_without_results_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plot", str(tmp_path)])
    assert exit_.value.code == 2 and "holds no results" in capsys.readouterr().err
