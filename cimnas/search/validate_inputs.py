"""Pre-flight validation of a search's input files (called by :mod:`cimnas.search.cli` before
:func:`cimnas.search.run.run_search`), so a bad file ends in one line naming the file, the field
or tensor, the expected and the found value — never a traceback, never a search of NaN results.

Checked: the device (``cuda`` without a GPU), the hardware-space YAML (syntax, every field named:
:meth:`cimnas.hw.HardwareSpace.from_yaml`), the accuracy predictor (a torch file of the search's
space), the layer value statistics (``[L, 31]`` histograms of the search's space, finite,
normalised) and the variation model file when one is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cimnas.inputs import InputError, check_device


def check_predictor_file(path: str, space: Any, device: str = "cpu") -> None:
    """The predictor at ``path`` loads and is of ``space`` (``constant:<x>`` passes)."""
    if str(path).startswith("constant:"):
        return
    if not Path(path).is_file():
        return  # run_search's ArtifactError carries the regeneration hint
    from cimnas.inputs import load_torch_file
    from cimnas.search.accuracy import load_predictor

    load_torch_file(path, "predictor")  # a readable torch file, else one line naming what it is
    predictor = load_predictor(path)  # the search's own loader (every predictor format it takes)
    pspace = getattr(predictor, "space", None)
    if pspace is not None and pspace.to_dict() != space.to_dict():
        raise InputError(f"predictor file {str(path)!r} is a predictor of space {predictor.space.name!r}, but the search "
                         f"space is {space.name!r}; pass --predictor of that space")


def check_value_stats_file(path: str | None, space: Any) -> None:
    if path is None or not Path(path).is_file():
        return  # None: typical histograms; missing: run_search's ArtifactError with the hint
    from cimnas.search.value_stats import load_value_stats

    load_value_stats(path, space)


def check_search_inputs(config: Any) -> None:
    """All file and device checks of one :class:`~cimnas.search.config.SearchConfig`."""
    from cimnas.hw import HardwareSpace
    from cimnas.space import get_space

    check_device(config.device, "device")
    space = get_space(config.space)
    HardwareSpace.from_yaml(config.hardware)
    check_predictor_file(config.predictor, space, config.device)
    check_value_stats_file(config.value_stats, space)
    variation = getattr(config, "variation", None)
    if variation is not None and not Path(variation).is_file():
        raise FileNotFoundError(f"variation model file {str(variation)!r} not found")


__all__ = ["check_search_inputs", "check_predictor_file", "check_value_stats_file"]
