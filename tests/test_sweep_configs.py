"""Every shipped sweep YAML: its command, with parameters substituted the way the W&B agent
does (``${args}`` -> ``--name=value``), is accepted by our CLIs."""

from pathlib import Path

import pytest

from cimnas.sweep import build_command, load_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


def _sample(spec: dict):
    """One value per parameter, as an agent would draw it (the upper end of ranges, the last
    of the listed values: the least default-like choice)."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return spec["max"]


def test_there_are_sweeps_for_search_supernet_and_predictor():
    programs = {load_sweep(p)["program"] for p in SWEEPS}
    assert {"search.py", "train.py"} <= programs
    assert len(SWEEPS) >= 3


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_command_is_accepted(path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    config = load_sweep(path)
    params = {name: _sample(spec) for name, spec in config["parameters"].items()}
    cmd = build_command(config, params)
    program_index = cmd.index(config["program"])
    args = cmd[program_index + 1:]
    assert any(a.startswith(f"--{next(iter(params))}=") for a in args)
    if config["program"] == "search.py":
        from cimnas.search.cli import parse_config

        parsed = parse_config(args)
        for name, value in params.items():
            obj = parsed
            for part in name.split("."):
                obj = getattr(obj, part)
            assert obj == value, name
    else:
        from cimnas.cli import train_cli

        with pytest.raises(SystemExit) as info:
            train_cli(args=args + ["--print_config"])
        assert info.value.code in (0, None)
        printed = capsys.readouterr().out
        for name, value in params.items():
            leaf = name.split(".")[-1]
            assert f"{leaf}: {value}" in printed, name
