"""Validation of the files a user passes, at the edge, and the one-line error convention.

Every entry point reads user files through these helpers, so a bad file fails with one line that
names the file, the field or tensor, what was expected and what was found, e.g.::

    error: supernet file 'x.pt': not a torch file (found text: 'hello'); expected a file written by save_supernet

:func:`run_user_main` turns an :class:`InputError` (and the other user-error types: missing files,
invalid values) into ``error: <message>`` on stderr and exit status 2, without a traceback;
``--debug`` on the command line shows the traceback instead. :func:`refuse_shipped_output` keeps
jobs from writing into the shipped artifacts (``cimnas/artifacts/``): promoting a trained file is
the explicit ``python -m cimnas.promote`` command.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cimnas


class InputError(ValueError):
    """A user-supplied file or value that cannot be used; the message names file and field."""


#: The shipped artifacts (read-only inputs of every job).
def shipped_artifacts_dir() -> Path:
    return Path(cimnas.__file__).resolve().parent / "artifacts"


def is_shipped_path(path: str | os.PathLike) -> bool:
    """True when ``path`` (resolved) lies inside the installed package's ``artifacts/`` folder."""
    target = Path(path).expanduser().resolve()
    root = shipped_artifacts_dir()
    return target == root or root in target.parents


def refuse_shipped_output(path: str | os.PathLike | None, what: str) -> None:
    """Raise :class:`InputError` when a job would write ``path`` inside the shipped artifacts."""
    if path is not None and is_shipped_path(path):
        raise InputError(
            f"{what} {str(path)!r} is inside the shipped artifacts ({shipped_artifacts_dir()}), which jobs never "
            "write; write to a run folder (the default) and copy it over the default with "
            "`python -m cimnas.promote --kind <kind> --from <file>`")


def _describe_bad_torch_file(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    head = path.read_bytes()[:64]
    if zipfile.is_zipfile(path):
        return f"a damaged torch archive ({size} bytes)"
    try:
        text = head.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
            return f"text, not a torch file (starts {text[:24]!r})"
    except UnicodeDecodeError:
        pass
    return f"not a torch file ({size} bytes of unknown content)"


def load_torch_file(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with every failure reported as one line naming
    ``what`` and the file (missing, a folder, empty, text, truncated / corrupt, pickled code)."""
    import pickle

    import torch

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{what} file {str(p)!r} not found")
    if p.is_dir():
        raise InputError(f"{what} file {str(p)!r} is a folder; expected a .pt file")
    if p.stat().st_size == 0:
        raise InputError(f"{what} file {str(p)!r}: empty file (0 bytes); expected a torch file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise InputError(f"{what} file {str(p)!r}: holds pickled objects that weights_only loading refuses "
                             f"({first[:160]}); expected plain tensors and containers") from err
        raise InputError(f"{what} file {str(p)!r}: {_describe_bad_torch_file(p)}; expected a torch file") from err
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError) as err:
        raise InputError(f"{what} file {str(p)!r}: {_describe_bad_torch_file(p)}; expected a torch file") from err


def require_mapping(obj: Any, path: str | os.PathLike, what: str, keys: Iterable[str] = ()) -> Mapping[str, Any]:
    """``obj`` must be a dict holding ``keys``; else one line naming the first missing key."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{what} file {str(path)!r}: expected a dict, found {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise InputError(f"{what} file {str(path)!r}: field {key!r} missing; found fields {sorted(map(str, obj))[:12]}")
    return obj


def check_tensor(value: Any, path: str | os.PathLike, what: str, name: str, shape: Sequence[int | None],
                 finite: bool = True) -> None:
    """Tensor ``name`` of ``path`` must have ``shape`` (None = any size) and finite values."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise InputError(f"{what} file {str(path)!r}: {name} must be a tensor, found {type(value).__name__}")
    found = list(value.shape)
    if len(found) != len(shape) or any(s is not None and s != f for s, f in zip(shape, found)):
        expected = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise InputError(f"{what} file {str(path)!r}: tensor {name} has shape {found}, expected {expected}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise InputError(f"{what} file {str(path)!r}: tensor {name} holds non-finite values (NaN / inf)")


def read_yaml_file(path: str | os.PathLike, what: str) -> Any:
    """YAML file -> data; a syntax error is one line with the file, line and column."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file {str(p)!r} not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(f"{what} file {str(p)!r}: YAML syntax error at{where}: {problem}") from err


def check_device(device: Any, what: str = "device") -> None:
    """``cuda`` without a GPU (or an unknown device string) is a user error."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{what}={device!r} is not a torch device; allowed: cpu, cuda, cuda:<index>") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{what}={device!r} requested but CUDA is not available on this machine; use cpu")


def check_config_files(argv: Sequence[str]) -> None:
    """Every ``--config FILE`` / ``--config=FILE`` of ``argv`` exists and is valid YAML (the
    parser's own message would not name the file)."""
    args = list(argv)
    for i, a in enumerate(args):
        path = a.split("=", 1)[1] if a.startswith("--config=") else (args[i + 1] if a == "--config" and i + 1 < len(args) else None)
        if path is not None and not path.lstrip().startswith(("{", "[")):
            read_yaml_file(path, "--config")


def one_line_errors(base: type) -> type:
    """A jsonargparse parser class whose usage errors are one line ``error: ...`` (exit 2)."""

    class OneLineErrors(base):  # type: ignore[misc, valid-type]
        def error(self, message: str, ex: Exception | None = None):  # noqa: D401
            from jsonargparse._common import debug_mode_active

            if not self.exit_on_error or debug_mode_active() or callable(getattr(self, "_error_handler", None)):
                return super().error(message, ex)
            sys.stderr.write(f"error: {' '.join(str(message).split())} (see --help)\n")
            self.exit(2)

    OneLineErrors.__name__ = OneLineErrors.__qualname__ = f"OneLine{base.__name__}"
    return OneLineErrors


#: Exception types that mean "the user gave something wrong", printed as one line.
def user_error_types() -> tuple[type[BaseException], ...]:
    import yaml

    return (InputError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError,
            yaml.YAMLError)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError)) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


def pop_debug(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """``argv`` (default ``sys.argv[1:]``) without ``--debug``, and whether it was there."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("CIMNAS_DEBUG", "") not in ("", "0")
    return [a for a in args if a != "--debug"], debug


def run_user_main(fn: Callable[[list[str]], Any], argv: Sequence[str] | None = None) -> int:
    """Run ``fn(args)``; a user error prints ``error: <one line>`` and returns 2 (``--debug``:
    the traceback instead). ``SystemExit`` from the argument parser passes through as its code."""
    args, debug = pop_debug(argv)
    try:
        result = fn(args)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    except user_error_types() as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


__all__ = ["check_config_files", "one_line_errors", "InputError", "shipped_artifacts_dir", "is_shipped_path", "refuse_shipped_output", "load_torch_file",
           "require_mapping", "check_tensor", "read_yaml_file", "check_device", "user_error_types", "one_line",
           "pop_debug", "run_user_main"]
