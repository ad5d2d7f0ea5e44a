"""Measured (architecture, quantization policy, accuracy) records: an append-only JSONL file.

One record per line, written whole and fsync'ed, so an interrupted writer leaves at most one
partial last line; :func:`repair_tail` cuts it before appending again and :func:`read_records`
ignores it. A record is encoding-independent::

    {"index": 17, "key": "<arch+policy JSON>", "space": "apq_mbv2_tiny",
     "arch": {...Architecture...}, "policy": {...QuantPolicy...} | null, "accuracy": 0.873, ...}

``policy`` null means a full-precision measurement.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from cimnas.space import Architecture, ArchBatch, QuantPolicy, SearchSpace


def design_key(arch: Architecture, policy: QuantPolicy | None) -> str:
    """Canonical JSON of a design (the cache / deduplication key)."""
    return json.dumps({"arch": arch.to_dict(), "policy": None if policy is None else policy.to_dict()},
                      sort_keys=True, separators=(",", ":"))


def repair_tail(path: str | os.PathLike) -> int:
    """Truncate a partial last line (an interrupted write); returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        data_end = size
        chunk = 4096
        pos = size
        last_newline = -1
        while pos > 0 and last_newline < 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                last_newline = start + i
            pos = start
        keep = last_newline + 1
        f.truncate(keep)
        return data_end - keep


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a partial last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if lineno == len(lines):  # the unterminated tail of an interrupted write
                continue
            from cimnas.inputs import InputError

            raise InputError(f"records file {str(path)!r} line {lineno}: not a JSON record "
                             f"(starts {line[:30]!r})") from None
    return out


def check_records(records: list[dict[str, Any]], path: str | os.PathLike, space: SearchSpace | None = None,
                  quantized: bool | None = None) -> list[dict[str, Any]]:
    """Every record must hold ``key``, ``arch`` and a finite ``accuracy`` in [0, 1], be of
    ``space`` and (with ``quantized``) carry a policy exactly when quantized; one line per
    failure naming file, line and field."""
    import math

    from cimnas.inputs import InputError

    for i, r in enumerate(records, 1):
        where = f"records file {str(path)!r} record {i}"
        if not isinstance(r, dict):
            raise InputError(f"{where}: expected a JSON object, found {type(r).__name__}")
        for key in ("key", "arch", "accuracy"):
            if key not in r:
                raise InputError(f"{where}: field {key!r} missing; found fields {sorted(r)[:10]}")
        acc = r["accuracy"]
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc) or not 0.0 <= acc <= 1.0:
            raise InputError(f"{where}: field 'accuracy'={acc!r}, expected a top-1 fraction in [0, 1]")
        if space is not None and r.get("space", space.name) != space.name:
            raise InputError(f"{where}: field 'space' is {r.get('space')!r}, expected {space.name!r}")
        if quantized is not None and quantized and r.get("policy") is None:
            raise InputError(f"{where}: field 'policy' is null (a full-precision measurement), but the job is "
                             "quantized; use the quantized records or set quantized: false")
    return records


class RecordWriter:
    """Append whole records to a JSONL file, each followed by flush + fsync."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_records_atomic(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically (tmp + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def records_to_batch(space: SearchSpace, records: list[dict[str, Any]], quantized: bool,
                     device: str = "cpu") -> ArchBatch:
    """Designs of ``records`` as one validated :class:`ArchBatch` (full-precision records get a
    uniform ``max(bit_choices)`` policy, which a full-precision predictor ignores)."""
    archs, policies = [], []
    for i, r in enumerate(records):
        archs.append(Architecture.from_dict(r["arch"]))
        if r.get("policy") is None:
            if quantized:
                raise ValueError(f"record {i} (index {r.get('index')}) is a full-precision measurement "
                                 "(policy null) but a quantized data set was requested")
            policies.append(QuantPolicy.uniform(space, max(space.bit_choices)))
        else:
            policies.append(QuantPolicy.from_dict(r["policy"]))
    return ArchBatch.from_designs(space, archs, policies, device=device)


def load_record_set(paths: list[str | os.PathLike], space: SearchSpace | None = None,
                    quantized: bool | None = None) -> list[dict[str, Any]]:
    """The records of ``paths`` (checked with :func:`check_records`), one per design key (the
    first wins), sorted by key — the order every predictor split is drawn from."""
    from pathlib import Path

    seen, records = set(), []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"records file {path} does not exist; run "
                                    "`python -m cimnas.models.predictor.measure` first")
        for r in check_records(read_records(path), path, space, quantized):
            if r["key"] not in seen:
                seen.add(r["key"])
                records.append(r)
    if len(records) < 3:
        raise ValueError(f"{list(map(str, paths))}: {len(records)} records; need at least 3")
    return sorted(records, key=lambda r: r["key"])


__all__ = ["load_record_set", "design_key", "repair_tail", "read_records", "RecordWriter", "write_records_atomic",
           "records_to_batch"]
