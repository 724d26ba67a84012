"""Resumable sweeps of GAMP and its state evolution over points (alpha, replicate).

A sweep folder holds
    config.json     the problem every point shares (`SweepConfig`: denoiser specs, d, iteration
                    settings, base seed) and the amp version that created the folder. The grid is
                    not part of it: a rerun may add alphas or replicates to the same folder.
    points/         one result saved by `amp.io` (NAME.json + NAME.npz) per finished point:
                    se_alpha=A (the SE curve at alpha = A) and amp_alpha=A_seed=S (GAMP on replicate S),
                    each with the full configuration, its seeds and the amp version that computed it.
    computed.jsonl  one JSON line per point computed, appended as soon as it is saved.
    .lock, .locks/  flock(2) files: the folder's, and one per point while it is computed.
A point is done exactly when its JSON exists (`amp.io` writes it last, atomically), so a sweep
interrupted anywhere (Ctrl-C, SIGKILL, power loss after fsync) loses at most the points in progress,
and a rerun of the same sweep skips what is done. Runs on one folder at the same time share the
work: each point is computed by whichever run takes its lock first, and the others load it. A folder
whose config.json differs from the new configuration is refused (ConfigMismatch) unless force=True,
which discards its saved points first.

Points can be computed on a dask.distributed cluster (run_sweep(..., client=client)): the client
takes each point's lock, submits it (at most twice the cluster's threads at a time) and saves each
result as soon as it arrives, so an interrupted cluster sweep resumes like a local one.

Seeds: replicate S draws its instance (W*, X, y) with seed [seed, S, 0] and GAMP's start with
[seed, S, 1] (NumPy SeedSequence entropy), the same at every alpha: the teacher and the first rows
of X are common to all alphas of a replicate, and the same seeds give the same numbers.
Locking uses fcntl.flock, so sweeps run on POSIX systems.
"""
import concurrent.futures
import contextlib
import dataclasses
import datetime
import fcntl
import math
import os
import pathlib
import shutil
import time

from tqdm import tqdm

import amp
import state_evolution as se
from amp import io as amp_io
from amp import specs
from amp.gamp import gamp
from amp.instances import teacher_student
from amp.validation import check_count, check_positive, check_unit_interval

FORMAT = "amp-toolkit-sweep"
FORMAT_VERSION = 1


class ConfigMismatch(ValueError):
    """A results folder holds a sweep of another configuration."""


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """What every point of a sweep shares.

    prior, channel : denoiser specs (`amp.specs`), stored in canonical form; d : dimension of the
    GAMP instances (None for a state-evolution-only sweep); max_iter, tol, damping, init_overlap :
    as in `amp.gamp` and `state_evolution.gamp`; auto_damping : GAMP's (the SE runs with `damping`);
    seed : base seed of the replicates.
    """

    prior: str
    channel: str
    d: int = None
    max_iter: int = 50
    tol: float = 1e-8
    damping: float = 1.0
    auto_damping: bool = False
    init_overlap: float = 0.01
    seed: int = 0

    def __post_init__(self):
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        put("prior", specs.parse(self.prior, "prior")[1])
        put("channel", specs.parse(self.channel, "channel")[1])
        put("d", None if self.d is None else check_count("d", self.d, minimum=1))
        put("max_iter", check_count("max_iter", self.max_iter))
        tol = float(self.tol)
        if not (math.isfinite(tol) and tol >= 0.0):
            raise ValueError(f"tol must be a finite number >= 0, got {self.tol}")
        put("tol", tol)
        put("damping", check_unit_interval("damping", self.damping, open_left=True))
        if not isinstance(self.auto_damping, bool):
            raise ValueError(f"auto_damping must be True or False, got {self.auto_damping!r}")
        put("init_overlap", check_unit_interval("init_overlap", self.init_overlap))
        put("seed", check_count("seed", self.seed))

    def denoisers(self):
        """(prior, channel) objects built from the specs."""
        return specs.parse(self.prior, "prior")[0], specs.parse(self.channel, "channel")[0]

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, where):
        """The config of a dict read from a file; ValueError naming `where` if it is not one."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"{where}: the sweep configuration must have exactly the keys {sorted(names)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: invalid sweep configuration: {err}") from None


@dataclasses.dataclass
class SweepResult:
    """The points of a sweep folder: se[alpha] and amp[(alpha, replicate)] are `amp.io.Saved`."""

    folder: pathlib.Path
    config: SweepConfig
    se: dict
    amp: dict

    @property
    def alphas(self):
        return sorted(set(self.se) | {a for a, _ in self.amp})

    def runs(self, alpha):
        """The GAMP results at `alpha`, by increasing replicate."""
        return [self.amp[key].result for key in sorted(k for k in self.amp if k[0] == alpha)]


def point_name(alpha, replicate=None):
    """'se_alpha=A' for the SE curve, 'amp_alpha=A_seed=S' for GAMP on replicate S (A by repr)."""
    return f"se_alpha={alpha!r}" if replicate is None else f"amp_alpha={alpha!r}_seed={replicate}"


def seeds_of(config, replicate):
    """{'instance': [seed, S, 0], 'init': [seed, S, 1]}: the seeds of replicate S."""
    return {"instance": [config.seed, replicate, 0], "init": [config.seed, replicate, 1]}


@contextlib.contextmanager
def _flock(path, shared=False, blocking=True):
    """Hold flock(2) on `path` (created if need be); yields False if non-blocking and taken.

    The kernel drops the lock when the holder dies, so a killed sweep leaves no stale lock.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB))
            got = True
        except BlockingIOError:
            got = False
        yield got
    finally:
        os.close(fd)


def _read_config(folder):
    path = folder / "config.json"
    data = amp_io.read_json(path)
    if not isinstance(data, dict) or set(data) != {"format", "format_version", "amp_version", "config"} \
            or data["format"] != FORMAT or data["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{path}: not an {FORMAT} configuration of format_version {FORMAT_VERSION}")
    return SweepConfig.from_dict(data["config"], path)


def _differences(saved, new):
    return ", ".join(f"{key} = {getattr(saved, key)!r} there, {getattr(new, key)!r} here"
                     for key in new.to_dict() if getattr(saved, key) != getattr(new, key))


def _prepare(folder, config, force):
    """Create the folder layout and its config.json, or check the one there (see the module docstring)."""
    (folder / "points").mkdir(parents=True, exist_ok=True)
    (folder / ".locks").mkdir(exist_ok=True)
    with _flock(folder / ".lock"):
        if (folder / "config.json").exists():
            saved = _read_config(folder)
            if saved == config:
                return
            if not force:
                raise ConfigMismatch(f"results folder {folder} holds a sweep of another configuration "
                                     f"({_differences(saved, config)}); use another folder, or force "
                                     "(--force) to discard its saved points")
            shutil.rmtree(folder / "points")
            (folder / "points").mkdir()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / "computed.jsonl")
        record = {"format": FORMAT, "format_version": FORMAT_VERSION, "amp_version": amp.__version__,
                  "config": config.to_dict()}
        amp_io.atomic_write(folder / "config.json", amp_io.to_json_bytes(record, "the sweep configuration"))


def _compute(config, alpha, replicate):
    """The SE curve at alpha (replicate None) or the GAMP run of a replicate, an IterationResult."""
    prior, channel = config.denoisers()
    if replicate is None:
        return se.gamp(prior, channel, alpha, max_iter=config.max_iter, tol=config.tol, damping=config.damping,
                       init_overlap=config.init_overlap)
    seeds = seeds_of(config, replicate)
    inst = teacher_student(config.d, alpha, prior, channel, seed=seeds["instance"])
    return gamp(inst.X, inst.y, prior, channel, truth=inst.W, max_iter=config.max_iter, tol=config.tol,
                damping=config.damping, init_overlap=config.init_overlap, seed=seeds["init"],
                auto_damping=config.auto_damping)


def _timed_compute(config, alpha, replicate):
    """(`_compute`'s result, its seconds), timed where it runs."""
    start = time.perf_counter()
    result = _compute(config, alpha, replicate)
    return result, time.perf_counter() - start


class _Here:
    """Runs each call at once, in this process: the executor of a sweep without a cluster."""

    capacity = 1

    def submit(self, name, fn, *args):
        future = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future

    def first_done(self, futures):
        return next(iter(futures))

    def cancel(self, futures):
        pass


def _point_record(config, alpha, replicate):
    """(config, seeds) saved with a point."""
    record = {"sweep": config.to_dict(), "alpha": alpha, "replicate": replicate}
    if replicate is None:
        return record, None
    record["n"] = max(1, round(alpha * config.d))
    return record, seeds_of(config, replicate)


def _commit(folder, config, alpha, replicate, result, seconds):
    """Save a computed point and log it, under the folder's shared lock and after checking that
    the folder still holds this configuration (a forced reset takes the lock exclusively)."""
    name = point_name(alpha, replicate)
    with _flock(folder / ".lock", shared=True):
        if _read_config(folder) != config:
            raise ConfigMismatch(f"the configuration of {folder} changed while this sweep ran; {name} not saved")
        record, seeds = _point_record(config, alpha, replicate)
        amp_io.save_result(result, folder / "points" / name, config=record, seeds=seeds)
        line = {"point": name, "pid": os.getpid(), "seconds": round(seconds, 3), "amp_version": amp.__version__,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        fd = os.open(folder / "computed.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        try:  # one write(2) of a short line with O_APPEND: lines of concurrent runs do not interleave
            os.write(fd, amp_io.to_json_bytes(line, "log line", indent=None))
            os.fsync(fd)
        finally:
            os.close(fd)


def _is_done(folder, alpha, replicate):
    return amp_io.paths(folder / "points" / point_name(alpha, replicate))[0].exists()


def run_sweep(folder, config, alphas, replicates=(), force=False, progress=None, on_point=None, client=None):
    """Compute every missing point of the grid `alphas` x ({SE} + `replicates`) into `folder`.

    config : SweepConfig; alphas : sample ratios > 0; replicates : replicate indices >= 0 (GAMP
    needs config.d). force : discard a folder of another configuration instead of refusing it.
    progress : a tqdm bar over the points to compute (None: only on a terminal). on_point : called
    as on_point(name) after each point this call saves. client : a dask.distributed Client whose
    cluster computes the points (needs amp-toolkit[distributed]; the folder is written by this
    process only). Returns `load_sweep(folder)`.
    """
    folder = pathlib.Path(folder)
    alphas = list(dict.fromkeys(check_positive("alpha", a) for a in alphas))
    replicates = list(dict.fromkeys(check_count("replicate", s) for s in replicates))
    if not alphas:
        raise ValueError("alphas must hold at least one sample ratio")
    if replicates and config.d is None:
        raise ValueError("GAMP replicates need the dimension d in the configuration")
    if client is None:
        executor = _Here()
    else:
        from amp.distributed import ClusterExecutor
        executor = ClusterExecutor(client)
    _prepare(folder, config, force)
    grid = [(a, s) for a in alphas for s in [None] + replicates]
    todo = [(a, s) for a, s in grid if not _is_done(folder, a, s)]
    with tqdm(total=len(todo), unit="point", disable={None: None, True: False, False: True}[progress]) as bar:

        def compute(points, blocking):
            """Compute the points not done yet whose lock this run takes (waiting for it when
            `blocking`), executor.capacity at a time, each saved under its lock as it finishes;
            returns the points locked by another run."""
            queue, busy, running = list(points), [], {}
            with contextlib.ExitStack() as held:  # on the way out, even on an interrupt: the points in
                held.callback(executor.cancel, running)  # flight are dropped, every lock taken is released
                while queue or running:
                    while queue and len(running) < executor.capacity:
                        alpha, replicate = point = queue.pop(0)
                        name = point_name(alpha, replicate)
                        lock = held.enter_context(contextlib.ExitStack())
                        if not lock.enter_context(_flock(folder / ".locks" / f"{name}.lock", blocking=blocking)):
                            lock.close()
                            busy.append(point)
                        elif _is_done(folder, alpha, replicate):  # another run finished it meanwhile
                            lock.close()
                            bar.update()
                        else:
                            bar.set_postfix_str(name)
                            running[executor.submit(name, _timed_compute, config, alpha, replicate)] = point, lock
                    if running:
                        future = executor.first_done(running)
                        (alpha, replicate), lock = running.pop(future)
                        with lock:
                            _commit(folder, config, alpha, replicate, *future.result())
                            if on_point is not None:
                                on_point(point_name(alpha, replicate))
                        bar.update()
            return busy

        compute(compute(todo, blocking=False), blocking=True)  # then wait for the points other runs held
    return load_sweep(folder)


def load_sweep(folder):
    """Every saved point of a sweep folder, checked against its config.json, as a SweepResult."""
    folder = pathlib.Path(folder)
    config = _read_config(folder)
    result = SweepResult(folder=folder, config=config, se={}, amp={})
    for path in sorted((folder / "points").glob("*.json")):
        saved = amp_io.load_result(path)
        record = saved.config
        if not (isinstance(record, dict) and set(record) >= {"sweep", "alpha", "replicate"}
                and record["sweep"] == config.to_dict()):
            raise ValueError(f"{path}: not a point of the sweep configured in {folder / 'config.json'}")
        alpha, replicate = record["alpha"], record["replicate"]
        if not isinstance(alpha, float) or not (replicate is None or type(replicate) is int) \
                or path.name != point_name(alpha, replicate) + ".json" \
                or (record, saved.seeds) != _point_record(config, alpha, replicate):
            raise ValueError(f"{path}: its recorded point (alpha, replicate, seeds) does not match its name")
        if replicate is None:
            result.se[alpha] = saved
        else:
            result.amp[(alpha, replicate)] = saved
    return result
