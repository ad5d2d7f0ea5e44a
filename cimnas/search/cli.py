"""Command line of ``search.py``: ``--config x.yaml`` plus dotted overrides (jsonargparse, the
same style as ``train.py``'s LightningCLI), e.g.::

    python search.py                                         # default joint search, shipped artifacts
    python search.py --config configs/search/compare.yaml    # joint vs baselines table
    python search.py --ga.popsize 64 --objective.name pareto --device cuda
    python search.py --resume true                           # continue from output.dir/checkpoint.pt
    python search.py --print_config                          # resolved configuration
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

# EvoTorch logs every Problem setting at INFO unless told otherwise; must be set before its import.
os.environ.setdefault("EVOTORCH_VERBOSE_LEVEL", "0")

from jsonargparse import ActionConfigFile, ArgumentParser

from cimnas.search._deferred_imports import defer_optional_imports

defer_optional_imports()  # before cimnas.search.config imports evotorch

from cimnas.search.config import SearchConfig  # noqa: E402


def build_parser() -> ArgumentParser:
    from cimnas.inputs import one_line_errors

    parser = one_line_errors(ArgumentParser)(
        prog="search.py", description="Joint search over network x quantization x CIM hardware (CIMNAS).",
        default_env=False, allow_abbrev=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (later flags override it)")
    parser.add_class_arguments(SearchConfig, as_group=False)
    return parser


def parse_config(argv: Sequence[str] | None = None) -> SearchConfig:
    parser = build_parser()
    namespace = parser.parse_args(list(argv) if argv is not None else None)
    namespace.pop("config", None)
    init = parser.instantiate(namespace)
    return SearchConfig(**{k: init[k] for k in SearchConfig.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, validate the input files (:mod:`cimnas.search.validate_inputs`), run; bad input
    (config values, missing or malformed files, an unavailable device) exits with status 2 and
    one line ``error: ...`` naming the field or file, never a traceback (``--debug`` shows it)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from cimnas.inputs import one_line, pop_debug, user_error_types
    from cimnas.search.validate_inputs import check_search_inputs

    args, debug = pop_debug(argv)
    try:
        from cimnas.inputs import check_config_files

        check_config_files(args)
        config = parse_config(args)
        check_search_inputs(config)
        from cimnas.search.run import run_search

        run_search(config, command=True)
    except user_error_types() as exc:  # ValueError covers HardwareError, SpaceError, GenomeError, ObjectiveError
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


def exit_now(status: int) -> None:
    """Leave the process with ``status`` once everything is written: flush the streams and the
    log handlers, close a W&B run left open, then ``os._exit`` — skipping the interpreter's
    teardown of torch & co., which takes seconds and writes nothing (every result file is
    already written atomically, the W&B run finished)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and "init" in vars(wandb):  # really imported (not a deferred placeholder)
        if getattr(wandb, "run", None) is not None:
            wandb.finish()
        teardown = getattr(wandb, "teardown", None)
        if teardown is not None:
            teardown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


__all__ = ["build_parser", "main", "parse_config", "exit_now"]
