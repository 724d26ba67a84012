"""Results saved in open formats and loaded without pickle: JSON metadata next to NPZ arrays.

`save_result(result, path, config, seeds)` writes two files:
    PATH.npz   the arrays: W (d, k) and C (k, k) and one array per numeric history list of an
               IterationResult (entry t of history[key] is row t of `history.<key>`), or the
               curves of a Bayes-optimal result; read back by np.load(allow_pickle=False), so an
               object array (a pickle) is refused and nothing in the file is ever executed;
    PATH.json  everything else, as strict JSON (no NaN/Infinity): the format and its version, the
               kind of result, amp.__version__, the creation time, the caller's configuration and
               seeds, the scalar fields (n_iter, converged, message, thresholds...), history lists
               of dicts (auto-damping events), a manifest of the arrays (dtype and shape of each)
               and the SHA-256 of PATH.npz.
The NPZ is written first and the JSON last, each atomically (`atomic_write`), so a result is
saved exactly when its JSON exists, and the recorded hash ties the pair: a half-written or
tampered pair fails to load with a ValueError that names the file. Only one process should write
a given PATH at a time (`amp.sweep` locks each point); a JSON that exists is never replaced unless
overwrite=True.
"""
import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import os
import pathlib
import secrets
import zipfile

import numpy as np

import amp
from amp.backend import to_numpy
from amp.results import IterationResult

FORMAT = "amp-toolkit-result"
FORMAT_VERSION = 1
#: dtype kinds an NPZ member may have: bool, integers, floats, unicode strings (never objects)
ARRAY_KINDS = "biufU"
#: JSON metadata larger than this is refused unread (a result's metadata is a few kB)
MAX_JSON_BYTES = 64 << 20
_TOP_KEYS = {"format", "format_version", "kind", "amp_version", "created", "config", "seeds", "fields",
             "history", "history_json", "arrays", "npz_sha256"}


@dataclasses.dataclass
class Saved:
    """A loaded result with what was recorded next to it.

    result : IterationResult or state_evolution.bayes_optimal.BayesOptimalResult (arrays as NumPy);
    kind : 'iteration' or 'bayes_optimal'; config, seeds : as given to `save_result`;
    amp_version : the package version that wrote it; created : ISO 8601 time; path : the JSON file.
    """

    result: object
    kind: str
    config: object
    seeds: object
    amp_version: str
    created: str
    path: pathlib.Path


def paths(path):
    """(PATH.json, PATH.npz) for PATH given with or without either suffix."""
    path = pathlib.Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".npz") else path
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".npz")


def _fsync_dir(folder):
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened and synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path, data, overwrite=True):
    """Write bytes `data` to `path` atomically: a temporary file in the same folder, fsync, then
    os.replace (overwrite=True) or os.link, which fails with FileExistsError if `path` exists.

    A reader sees the old file or the new one, never a part; an interrupted write leaves at most
    a hidden '.NAME.*.tmp' file, which nothing reads.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def to_json_bytes(obj, name, indent=1):
    """Strict JSON (no NaN/Infinity) of `obj` and a newline, or a ValueError naming `name`;
    indent=None gives one line."""
    try:
        return (json.dumps(obj, indent=indent, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be JSON-serialisable with finite numbers: {err}") from None


def _reject_constant(token):
    raise ValueError(f"non-standard JSON constant {token}")


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in a JSON object: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return dict(pairs)


def read_json(path):
    """The strict-JSON content of `path`; a ValueError naming the file if it is not."""
    path = pathlib.Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ValueError(f"larger than {MAX_JSON_BYTES} bytes")
        return json.loads(path.read_bytes(), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path}: not a valid JSON file: {err}") from None


# ----------------------------------------------------------------------------- encoding


def _history_kind(key, values):
    """'json' (dicts, or empty), 'float' (numbers) or 'array' (NumPy arrays of one shape) for a history list."""
    if all(isinstance(v, dict) for v in values):
        return "json"
    if all(np.ndim(v) == 0 and not isinstance(v, (dict, str, bool)) for v in values):
        return "float"
    shapes = {np.shape(v) for v in values}
    if len(shapes) == 1 and all(isinstance(v, np.ndarray) for v in values):
        return "array"
    raise ValueError(f"history[{key!r}] must hold numbers, NumPy arrays of one shape, or dicts")


def _encode_iteration(result):
    arrays = {name: to_numpy(getattr(result, name)) for name in ("W", "C") if getattr(result, name) is not None}
    history, history_json = {}, {}
    for key, values in result.history.items():
        kind = _history_kind(key, list(values))
        history[key] = kind
        if kind == "json":
            history_json[key] = list(values)
        else:
            arrays[f"history.{key}"] = np.asarray(values, dtype=float)
    fields = {"n_iter": int(result.n_iter), "converged": bool(result.converged), "diverged": bool(result.diverged),
              "message": str(result.message)}
    return arrays, fields, history, history_json


def _bayes_optimal_classes():
    from state_evolution.bayes_optimal import BayesOptimalResult, Branch  # state_evolution imports amp
    return BayesOptimalResult, Branch


def _encode_bayes_optimal(result):
    _, Branch = _bayes_optimal_classes()
    arrays, fields = {}, {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, Branch):
            arrays.update({f"{f.name}.{g.name}": np.asarray(getattr(value, g.name))
                           for g in dataclasses.fields(Branch)})
        elif isinstance(value, np.ndarray):
            arrays[f.name] = value
        else:
            fields[f.name] = value if value is None or isinstance(value, (str, list)) else float(value)
    return arrays, fields


def _kind_of(result):
    if isinstance(result, IterationResult):
        return "iteration"
    if type(result).__name__ == "BayesOptimalResult" and isinstance(result, _bayes_optimal_classes()[0]):
        return "bayes_optimal"
    raise ValueError(f"result must be an IterationResult or a BayesOptimalResult, got {type(result).__name__}")


def save_result(result, path, config=None, seeds=None, overwrite=False):
    """Save `result` as PATH.json and PATH.npz (see the module docstring); returns the JSON's path.

    result : IterationResult (a GAMP run or an SE curve; device arrays are moved to the host) or
    BayesOptimalResult. config, seeds : JSON-serialisable records of how it was made (e.g. the
    denoiser specs, d, alpha, the iteration settings and the seeds of the instance and of the
    start), so that it can be made again. overwrite : replace an existing PATH.json; otherwise
    that is a FileExistsError (a PATH.npz without its JSON is an unfinished save and is replaced).
    """
    json_path, npz_path = paths(path)
    kind = _kind_of(result)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "amp_version": amp.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "config": config, "seeds": seeds}
    to_json_bytes(config, "config")
    to_json_bytes(seeds, "seeds")
    if kind == "iteration":
        arrays, meta["fields"], meta["history"], meta["history_json"] = _encode_iteration(result)
    else:
        arrays, meta["fields"] = _encode_bayes_optimal(result)
    for name, a in arrays.items():
        if a.dtype.kind not in ARRAY_KINDS:
            raise ValueError(f"array {name} has dtype {a.dtype}, which cannot be saved without pickle")
    meta["arrays"] = {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    meta["npz_sha256"] = hashlib.sha256(payload).hexdigest()
    text = to_json_bytes(meta, "the result's metadata")
    if json_path.exists() and not overwrite:
        raise FileExistsError(f"{json_path} exists; pass overwrite=True to replace it")
    atomic_write(npz_path, payload)
    atomic_write(json_path, text, overwrite=overwrite)
    return json_path


# ----------------------------------------------------------------------------- decoding


class _Checker:
    """Type checks of loaded metadata; each failure is a ValueError naming the file."""

    def __init__(self, path):
        self.path = path

    def fail(self, what):
        raise ValueError(f"{self.path}: {what}")

    def get(self, mapping, key, types, where="metadata"):
        if key not in mapping:
            self.fail(f"{where} lacks {key!r}")
        value = mapping[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in _as_tuple(types))
        if not ok:
            self.fail(f"{where}[{key!r}] has unexpected type {type(value).__name__}")
        return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _check_meta(meta, check):
    if not isinstance(meta, dict):
        check.fail("the metadata is not a JSON object")
    if check.get(meta, "format", str) != FORMAT:
        check.fail(f"not an {FORMAT} file (format {meta['format']!r})")
    if check.get(meta, "format_version", int) != FORMAT_VERSION:
        check.fail(f"format_version {meta['format_version']} is not {FORMAT_VERSION}, the one this version reads")
    kind = check.get(meta, "kind", str)
    if kind not in ("iteration", "bayes_optimal"):
        check.fail(f"unknown kind {kind!r}")
    expected = _TOP_KEYS - ({"history", "history_json"} if kind == "bayes_optimal" else set())
    if set(meta) != expected:
        check.fail(f"unexpected metadata keys {sorted(set(meta) ^ expected)}")
    check.get(meta, "amp_version", str)
    check.get(meta, "created", str)
    check.get(meta, "fields", dict)
    digest = check.get(meta, "npz_sha256", str)
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        check.fail("npz_sha256 is not a SHA-256 hex digest")
    for name, spec in check.get(meta, "arrays", dict).items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape"}:
            check.fail(f"the manifest entry of array {name!r} is not {{dtype, shape}}")
        dtype = check.get(spec, "dtype", str, f"arrays[{name!r}]")
        shape = check.get(spec, "shape", list, f"arrays[{name!r}]")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            check.fail(f"arrays[{name!r}] has a shape that is not a list of sizes")
        try:
            kind_ok = np.dtype(dtype).kind in ARRAY_KINDS
        except TypeError:
            kind_ok = False
        if not kind_ok:
            check.fail(f"arrays[{name!r}] has dtype {dtype!r}, which is not a plain numeric or string dtype")
    return kind


def _read_arrays(npz_path, meta, check):
    """The NPZ's arrays, after checking its hash and that it holds exactly the manifest."""
    try:
        payload = npz_path.read_bytes()
    except FileNotFoundError:
        check.fail(f"its arrays {npz_path.name} are missing")
    if hashlib.sha256(payload).hexdigest() != meta["npz_sha256"]:
        raise ValueError(f"{npz_path}: contents do not match the SHA-256 recorded in {check.path.name} "
                         "(changed after saving, or left by another save)")
    arrays = {}
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            names = set(npz.files)
            if names != set(meta["arrays"]):
                raise ValueError(f"holds arrays {sorted(names)}, the metadata lists {sorted(meta['arrays'])}")
            for name in sorted(names):
                a = npz[name]
                spec = meta["arrays"][name]
                if not isinstance(a, np.ndarray) or a.dtype.str != spec["dtype"] or list(a.shape) != spec["shape"]:
                    raise ValueError(f"array {name!r} is not the {spec['dtype']} {spec['shape']} array of the manifest")
                arrays[name] = a
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"{npz_path}: refused: {err}") from None
    return arrays


def _decode_iteration(meta, arrays, check):
    fields = meta["fields"]
    if set(fields) != {"n_iter", "converged", "diverged", "message"}:
        check.fail(f"unexpected fields {sorted(fields)}")
    history_kinds = check.get(meta, "history", dict)
    history_json = check.get(meta, "history_json", dict)
    history = {}
    for key, kind in history_kinds.items():
        if kind == "json":
            values = check.get(history_json, key, list, "history_json")
            if not all(isinstance(v, dict) for v in values):
                check.fail(f"history_json[{key!r}] must be a list of objects")
            history[key] = values
        elif kind in ("float", "array"):
            a = arrays.get(f"history.{key}")
            if a is None or a.dtype.kind != "f" or (kind == "float") != (a.ndim == 1):
                check.fail(f"history[{key!r}] has no matching float array")
            history[key] = [float(v) for v in a] if kind == "float" else list(a)
        else:
            check.fail(f"history[{key!r}] has unknown kind {kind!r}")
    if set(history_json) - {k for k, v in history_kinds.items() if v == "json"}:
        check.fail("history_json has entries the history does not list")
    expected = {f"history.{k}" for k, v in history_kinds.items() if v != "json"} | ({"W", "C"} & set(arrays))
    if set(arrays) != expected:
        check.fail(f"unexpected arrays {sorted(set(arrays) ^ expected)}")
    return IterationResult(W=arrays.get("W"), C=arrays.get("C"), history=history,
                           n_iter=check.get(fields, "n_iter", int, "fields"),
                           converged=check.get(fields, "converged", bool, "fields"),
                           diverged=check.get(fields, "diverged", bool, "fields"),
                           message=check.get(fields, "message", str, "fields"))


def _json_scalar(value):
    """None, a string, a number or a list of strings: what a Bayes-optimal field may hold."""
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return value is None or isinstance(value, (str, float, int)) and not isinstance(value, bool)


def _decode_bayes_optimal(meta, arrays, check):
    BayesOptimalResult, Branch = _bayes_optimal_classes()
    fields = meta["fields"]
    values, used = {}, set()
    for f in dataclasses.fields(BayesOptimalResult):
        if f.type is Branch:
            names = [f"{f.name}.{g.name}" for g in dataclasses.fields(Branch)]
            if not set(names) <= arrays.keys():
                check.fail(f"arrays of the {f.name} branch are missing")
            values[f.name] = Branch(*(arrays[n] for n in names))
            used.update(names)
        elif f.name in arrays:
            values[f.name] = arrays[f.name]
            used.add(f.name)
        elif f.name in fields:
            if not _json_scalar(fields[f.name]):
                check.fail(f"fields[{f.name!r}] has unexpected type {type(fields[f.name]).__name__}")
            values[f.name] = fields[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            check.fail(f"{f.name!r} is missing")
    if set(fields) - values.keys() or set(arrays) - used:
        check.fail(f"unexpected entries {sorted((set(fields) - values.keys()) | (set(arrays) - used))}")
    return BayesOptimalResult(**values)


def load_result(path):
    """Load a result saved by `save_result` (PATH, PATH.json or PATH.npz) as a `Saved`.

    Nothing is unpickled or executed. A file that is missing, not strict JSON, of an unexpected
    type or layout, or whose NPZ does not match its recorded SHA-256 or holds anything but plain
    numeric/string arrays, raises ValueError naming the file.
    """
    json_path, npz_path = paths(path)
    meta = read_json(json_path)
    check = _Checker(json_path)
    kind = _check_meta(meta, check)
    arrays = _read_arrays(npz_path, meta, check)
    result = (_decode_iteration if kind == "iteration" else _decode_bayes_optimal)(meta, arrays, check)
    return Saved(result=result, kind=kind, config=meta["config"], seeds=meta["seeds"],
                 amp_version=meta["amp_version"], created=meta["created"], path=json_path)
