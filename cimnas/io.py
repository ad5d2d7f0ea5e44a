"""Atomic writes and small renderers shared by every job.

A reader (or a resumed job) never sees a half-written file: every write goes to a temporary file
in the same folder, is flushed and fsync'ed, and replaces the target with one ``os.replace``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

#: Environment variable naming a JSON file that a job fills with its final metrics
#: (set by the local sweep runner, :mod:`cimnas.sweep`, for each trial).
METRICS_FILE_ENV = "CIMNAS_METRICS_FILE"


def _tmp_path(path: Path) -> Path:
    # keep the suffix last so writers that infer the format from it (matplotlib) still work
    return path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")


def atomic_write(path: "str | os.PathLike[str]", write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it over ``path``
    (parent folders are created). On any error the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: "str | os.PathLike[str]", text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: "str | os.PathLike[str]", obj: Any, *, indent: int | None = 2,
                      sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (plus a final newline) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_torch_save(path: "str | os.PathLike[str]", obj: Any) -> Path:
    """``torch.save(obj, path)`` atomically."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (every job's figures)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def atomic_savefig(path: "str | os.PathLike[str]", fig: Any, *, close: bool = True, **kwargs: Any) -> Path:
    """``fig.savefig(path)`` atomically (the format follows ``path``'s suffix), then close the
    figure (``close=False`` keeps it)."""
    fmt = Path(path).suffix.lstrip(".") or None
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))
    finally:
        if close:
            pyplot().close(fig)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table (cells rendered with ``str``), ending with a newline;
    ``align``: per column ``"left"`` (default) or ``"right"``."""
    marks = ["---:" if a == "right" else "---" for a in (align or ["left"] * len(header))]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_metrics_file(metrics: dict[str, Any], path: "str | os.PathLike[str] | None" = None,
                       merge: bool = False) -> str | None:
    """Write ``metrics`` (plain numbers) as JSON to ``path`` or ``$CIMNAS_METRICS_FILE``;
    returns the path written, or None when neither is set. ``merge``: keep the file's other
    entries (a later writer adds its figures instead of replacing the trainer's)."""
    path = path or os.environ.get(METRICS_FILE_ENV)
    if not path:
        return None
    plain = {k: (float(v) if hasattr(v, "__float__") else v) for k, v in metrics.items()}
    if merge and os.path.isfile(path):
        import json

        try:
            previous = json.loads(open(path).read())
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict):
            plain = {**previous, **plain}
    atomic_write_json(path, plain, sort_keys=True)
    return os.fspath(path)


__all__ = ["METRICS_FILE_ENV", "atomic_write", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "atomic_savefig", "markdown_table", "pyplot", "write_metrics_file"]
