"""Every entry point refuses bad input files with one line naming the file and the field or tensor
(issue 16): exit status != 0, an ``error: ...`` line holding the expected names, no traceback, and
nothing written (no file in the scratch folder or the output folder, the shipped artifacts
untouched). The table lives in ``tests/bad_inputs_table.py``; ``scripts/bad_inputs_survey.py``
counts the outcomes of the same table with subprocesses on any checkout.

The cases run in-process through each entry point's ``main(argv)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs_table import ART, CASES, ENTRIES, ROOT, expand, make_fixtures  # noqa: E402

# import every entry point now: loggers created at import bind the session's stderr, not a test's capture
for _module in {m.split(":")[0] for _, m in ENTRIES.values()}:
    importlib.import_module(_module)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _finish_wandb():
    """Close any W&B run a CLI job opened (a later test's wandb.init would otherwise reuse it)."""
    yield
    import wandb

    wandb.finish()
NEEDS_DATA = {"measure", "value_stats"}
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    return make_fixtures(tmp)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _artifact_stamp() -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in ART.rglob("*") if p.is_file()}


def run_in_process(entry: str, argv: list[str]) -> int:
    module, name = ENTRIES[entry][1].split(":")
    fn = getattr(importlib.import_module(module), name)
    if entry in ("measure", "value_stats"):  # their __main__ wraps main with run_user_main
        from cimnas.inputs import run_user_main

        return run_user_main(fn, argv)
    try:
        code = fn(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    return 0 if code is None else code


def test_table_size():
    assert len(CASES) >= 40
    assert {e for _, e, _, _ in CASES} == set(ENTRIES)  # every entry point has cases
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_error(case, fixtures, tmp_path, monkeypatch, capsys):
    name, entry, args, expected = case
    if entry in NEEDS_DATA and not FMNIST.is_file() and not os.environ.get("CIMNAS_FASHION_MNIST_DIR"):
        pytest.skip("needs Fashion-MNIST")
    for link in ("configs", "cimnas"):
        (tmp_path / link).symlink_to(ROOT / link)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(logging.root, "handlers", [])  # no handler bound to an earlier test's captured stderr
    scratch = Path(fixtures["tmp"])
    before_scratch, before_art = _files(scratch), _artifact_stamp()
    argv = expand(args, fixtures)
    code = run_in_process(entry, argv)
    err = capsys.readouterr().err
    assert code != 0, f"{name}: exit status 0 for a bad input"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:") or line.startswith("refused:")]
    assert lines, f"{name}: no 'error:' line in {err[-800:]!r}"
    line = lines[-1]
    for text in expected:
        assert text in line, f"{name}: {text!r} not named in {line!r}"
    assert _files(scratch) == before_scratch, f"{name}: wrote {_files(scratch) - before_scratch}"
    written = [str(p) for top in tmp_path.iterdir() if top.name not in ("configs", "cimnas")
               for p in ([top] if top.is_file() else top.rglob("*")) if p.is_file()]
    assert not written, f"{name}: wrote {written}"
    assert _artifact_stamp() == before_art


def test_debug_flag_shows_the_traceback(fixtures):
    from cimnas.search.cli import main

    with pytest.raises(Exception, match="empty"):
        main(["--debug", "--predictor", fixtures["empty_pt"], "--output.dir", f"{fixtures['tmp']}/out"])


def test_hardware_yaml_must_name_every_field(fixtures):
    from cimnas.hw import HardwareSpace
    from cimnas.hw.params import HardwareError

    with pytest.raises(HardwareError, match=r"hw_norows\.yaml.*\['rows'\]"):
        HardwareSpace.from_yaml(fixtures["hw_norows_yaml"])
    for path in sorted((ROOT / "configs" / "hw").glob("*.yaml")):  # every shipped one names them all
        HardwareSpace.from_yaml(path)
