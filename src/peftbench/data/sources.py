"""Read a dataset split from a local folder (tsv/csv/jsonl/json/parquet/txt) or the hub, with
checks that name the file and row before anything is tokenized."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Mapping

from peftbench.config.paths import data_root
from peftbench.errors import ConfigError, DataError


def local_dir(ds: Mapping[str, Any], data_dir: str | None) -> Path | None:
    """The dataset's local folder when it exists under the data root (or as an absolute path)."""
    loc = ds.get("local") or {}
    sub = loc.get("dir")
    if not sub:
        return None
    p = Path(sub).expanduser()
    if not p.is_absolute():
        root = data_root(data_dir)
        if root is None:
            return None
        p = root / p
    return p if p.is_dir() else None


def split_file(ds: Mapping[str, Any], folder: Path, split: str) -> Path:
    files = (ds.get("local") or {}).get("files") or {}
    if split not in files:
        raise ConfigError(f"dataset '{ds['name']}' has no local file for split '{split}'", option=f"dataset.local.files.{split}")
    path = folder / files[split]
    if not path.exists():
        raise DataError(f"dataset file {path} is missing", option=f"dataset.local.files.{split}")
    if path.stat().st_size == 0:
        raise DataError(f"dataset file {path} is empty", option=f"dataset.local.files.{split}")
    return path


def _fmt(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    suf = path.suffix.lower().lstrip(".")
    return {"txt": "text", "jsonl": "jsonl", "json": "json", "csv": "csv", "tsv": "tsv", "parquet": "parquet"}.get(suf, "tsv")


LINE = "__line__"  # each row's line in its file (messages name it; never a data column)


def at(rows: list[dict[str, Any]], i: int) -> str:
    """Where row ``i`` of a (possibly subsampled) list came from: its line in the file."""
    line = rows[i].get(LINE) if isinstance(rows[i], dict) else None
    return f"line {line}" if line is not None else f"row {i + 1}"  # hub rows have no file line


def read_rows(path: Path, fmt: str | None = None, header: bool = True, sep: str | None = None,
              columns: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts, each with its file line (``LINE``). Headerless delimited files get columns
    named by position ("0", "1", …) or by ``columns``. Non-UTF-8 bytes are refused with the line
    number; a UTF-8 byte-order mark is not part of the first column's name."""
    fmt = _fmt(path, fmt)
    try:
        if fmt == "parquet":
            import pandas as pd

            return [{**r, LINE: i + 1} for i, r in enumerate(pd.read_parquet(path).to_dict("records"))]
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: not valid UTF-8 ({e.reason})", option="dataset.local") from e
    if not text.strip():
        raise DataError(f"dataset file {path} is empty", option="dataset.local")
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {e.lineno}: invalid JSON ({e.msg})", option="dataset.local") from e
        if isinstance(data, dict):  # {"data": [...]} style
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        return [{**r, LINE: i + 1} if isinstance(r, dict) else r for i, r in enumerate(data)]
    if fmt == "jsonl":
        rows = []
        # "\n" alone ends a record: U+2028, form feeds and the like are text (str.splitlines would cut there)
        for i, line in enumerate(text.split("\n"), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {i}: invalid JSON ({e.msg})", option="dataset.local") from e
                rows.append({**rec, LINE: i} if isinstance(rec, dict) else rec)
        return rows
    if fmt == "text":
        return [{"text": text}]
    return _delimited(path, text, sep or ("\t" if fmt == "tsv" else ","), header, columns)


def _delimited(path: Path, text: str, delim: str, header: bool, columns: list[str] | None) -> list[dict[str, Any]]:
    """CSV/TSV with the file's own line numbers; only a line break ends a row (not U+2028 or a
    form feed inside the text), a field may be as long as the file, and a row with more fields
    than the header (an unescaped tab in the text) is refused rather than silently cut."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim,
                        quoting=csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL)
    rows_raw: list[tuple[int, list[str]]] = []
    try:
        for r in reader:
            if r:
                rows_raw.append((reader.line_num, r))
    except csv.Error as e:
        raise DataError(f"{path} line {reader.line_num}: {e}", option="dataset.local") from e
    if header:
        names, rows_raw = rows_raw[0][1], rows_raw[1:]
    else:  # the width most rows have: a row wider than that carries a separator inside its text
        from collections import Counter

        names = columns or [str(i) for i in range(Counter(len(r) for _, r in rows_raw).most_common(1)[0][0])]
    for line, r in rows_raw:
        if any(x.strip() for x in r[len(names):]):  # empty trailing fields are harmless
            raise DataError(f"{path} line {line}: {len(r)} fields where the file has {len(names)} (a "
                            f"{'tab' if delim == chr(9) else 'separator'} inside the text? quote or escape it)",
                            option="dataset.local")
    out = [{**{n: (r[i] if i < len(r) else None) for i, n in enumerate(names)}, LINE: line} for line, r in rows_raw]
    if not out:
        raise DataError(f"dataset file {path} has a header but no rows", option="dataset.local")
    return out


def column(rows: list[dict[str, Any]], key: Any, path: Path | str, option: str) -> list[Any]:
    """The values of one column (name or position), refusing a missing column or empty cells by row."""
    key = str(key)
    if key not in rows[0]:
        raise DataError(f"{path}: no column '{key}' (columns: {[c for c in rows[0] if c != LINE]})", option=option)
    vals = []
    for i, r in enumerate(rows):
        v = r.get(key)
        if v is None:
            raise DataError(f"{path} {at(rows, i)}: column '{key}' is missing", option=option)
        vals.append(v)
    return vals


def load_hub(ds: Mapping[str, Any], split: str) -> list[dict[str, Any]]:
    """Load a split from the Hugging Face Hub by name (users online)."""
    hub = ds.get("hub") or {}
    if not hub.get("path"):
        raise ConfigError(
            f"dataset '{ds['name']}' has no local copy under the data dir and no hub name; "
            "set PEFTBENCH_DATA_DIR or paths.data_dir", option="paths.data_dir",
        )
    import datasets

    hub_split = (hub.get("splits") or {}).get(split, split)
    try:
        d = datasets.load_dataset(hub["path"], hub.get("name"), split=hub_split)
    except Exception as e:  # noqa: BLE001 - offline or unknown dataset: say what to do
        raise DataError(
            f"could not load '{hub['path']}' ({split}) from the hub: {str(e).splitlines()[0]}. Offline? put a local "
            f"copy under the data dir ({(ds.get('local') or {}).get('dir')}) and set PEFTBENCH_DATA_DIR",
            option="paths.data_dir",
        ) from e
    return [dict(r) for r in d]
