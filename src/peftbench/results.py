"""results.json: one schema, validated on write and on read, written atomically.

Pure Python on purpose: report/ reads these files without importing torch.
Extend keys freely; renaming one needs a SCHEMA_VERSION bump.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
FILENAME = "results.json"
STATUSES = ("ok", "failed", "diverged", "oom", "refused", "interrupted")

# key -> allowed JSON types; every record carries all of them (values may be empty dicts).
REQUIRED: dict[str, tuple[type, ...]] = {
    "schema_version": (int,),
    "run_id": (str,),
    "status": (str,),
    "error": (str, type(None)),
    "config": (dict,),
    "model": (dict,),
    "method": (dict,),
    "dataset": (dict,),
    "seed": (int,),
    "params": (dict,),
    "memory": (dict,),
    "speed": (dict,),
    "metrics": (dict,),
    "timings": (dict,),
    "env": (dict,),
}
# Sub-keys that the report relies on.
REQUIRED_SUB = {
    "model": ("family", "size"),
    "method": ("name", "family"),
    "dataset": ("name",),
}


class SchemaError(ValueError):
    pass


def validate(rec: dict[str, Any]) -> dict[str, Any]:
    """Raise SchemaError naming the first problem; return rec unchanged."""
    if not isinstance(rec, dict):
        raise SchemaError("record is not a JSON object")
    for key, types in REQUIRED.items():
        if key not in rec:
            raise SchemaError(f"missing key '{key}'")
        if not isinstance(rec[key], types) or (types == (int,) and isinstance(rec[key], bool)):
            raise SchemaError(f"key '{key}' has type {type(rec[key]).__name__}")
    if rec["schema_version"] < 1:
        raise SchemaError(f"schema_version {rec['schema_version']} is not a version (they start at 1)")
    if rec["schema_version"] > SCHEMA_VERSION:
        raise SchemaError(f"schema_version {rec['schema_version']} is newer than {SCHEMA_VERSION}")
    if rec["status"] not in STATUSES:
        raise SchemaError(f"status '{rec['status']}' not in {STATUSES}")
    for key, subs in REQUIRED_SUB.items():
        for s in subs:
            if s not in rec[key]:
                raise SchemaError(f"missing key '{key}.{s}'")
    for k, v in rec["params"].items():
        if k != "delta_rank" and v is not None and not isinstance(v, (int, float)):
            raise SchemaError(f"params.{k} is not a number")
    if "eval" in rec:
        _check_eval(rec["eval"])
    if "curves" in rec:
        _check_curves(rec["curves"])
    return rec


EVAL_SPLITS = ("val", "test")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_eval(ev: Any) -> None:
    """Optional ``eval``: per split, what the report's baselines and intervals read."""
    if not isinstance(ev, dict):
        raise SchemaError(f"key 'eval' has type {type(ev).__name__} (an object of splits)")
    for split, e in ev.items():
        where = f"eval.{split}"
        if split not in EVAL_SPLITS:
            raise SchemaError(f"{where}: unknown split (one of {EVAL_SPLITS})")
        if not isinstance(e, dict):
            raise SchemaError(f"{where} has type {type(e).__name__}")
        for key, ok, what in (("n", _is_int, "an int"), ("metric", lambda v: isinstance(v, str), "a string"),
                              ("majority_rate", lambda v: v is None or _is_number(v), "a number or null"),
                              ("majority_label", lambda v: v is None or _is_int(v), "an int or null"),
                              ("predictions", lambda v: v is None or isinstance(v, str), "a path or null")):
            if key not in e:
                raise SchemaError(f"missing key '{where}.{key}'")
            if not ok(e[key]):
                raise SchemaError(f"{where}.{key} is not {what}: {e[key]!r}")
        if e["n"] < 0 or (e["majority_rate"] is not None and not 0 <= e["majority_rate"] <= 1):
            raise SchemaError(f"{where}: n must be ≥ 0 and majority_rate within [0, 1]")


def _check_points(points: Any, where: str) -> None:
    if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and _is_int(p[0]) and _is_number(p[1]) for p in points):
        raise SchemaError(f"{where} is not a list of [step, value] pairs")


def _check_curves(cv: Any) -> None:
    """Optional ``curves``: the validation metric on a capped subset and the train loss, by step."""
    if not isinstance(cv, dict):
        raise SchemaError(f"key 'curves' has type {type(cv).__name__}")
    if "train_loss" in cv:
        _check_points(cv["train_loss"], "curves.train_loss")
    if "val" in cv:
        v = cv["val"]
        if not isinstance(v, dict) or not isinstance(v.get("metric"), str) or not _is_int(v.get("subset")):
            raise SchemaError("curves.val needs 'metric' (a string), 'subset' (an int) and 'points'")
        _check_points(v.get("points"), "curves.val.points")


NOT_IDENTITY = ("paths", "hydra", "logger", "checkpoint", "callbacks")
NOT_IDENTITY_TRAINER = ("enable_progress_bar", "log_every_n_steps", "enable_model_summary")


def dotted_items(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, leaf value)`` pairs of a nested dict, in order (an empty dict is a leaf);
    a key already written dotted (``trainer.max_steps``) stays as it is."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        out += dotted_items(v, key + ".") if isinstance(v, dict) and v else [(key, v)]
    return out


def run_id(config: dict[str, Any]) -> str:
    """Hash of the resolved config without output paths and what only changes how a run is
    watched (loggers, progress display, checkpoint cadence): the same run has the same id anywhere."""
    cfg = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    if isinstance(cfg.get("trainer"), dict):
        cfg["trainer"] = {k: v for k, v in cfg["trainer"].items() if k not in NOT_IDENTITY_TRAINER}
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write(path: str | os.PathLike, rec: dict[str, Any]) -> Path:
    """Validate, then write via a temp file + rename so a crash never leaves half a file."""
    validate(rec)
    path = Path(path)
    if path.is_dir() or path.suffix != ".json":
        path = path / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o644 & ~_umask())  # mkstemp's 0600 would hide records from a cluster's other users
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(rec, f, indent=2, sort_keys=True, default=str, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate; raises SchemaError (or json errors wrapped in it) on a bad file."""
    try:
        rec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # nested past Python's stack
        raise SchemaError(f"{path}: unreadable ({e})") from e
    try:
        return validate(rec)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from e


def empty_record(**fields: Any) -> dict[str, Any]:
    """A record with every required key present, overridden by ``fields``."""
    rec: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": "", "status": "ok", "error": None,
        "config": {}, "model": {"family": "", "size": ""}, "method": {"name": "", "family": ""},
        "dataset": {"name": ""}, "seed": 0, "params": {}, "memory": {}, "speed": {},
        "metrics": {}, "timings": {}, "env": {},
    }
    rec.update(fields)
    return rec
