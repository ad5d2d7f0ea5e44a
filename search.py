"""Joint search over network x quantization x CIM hardware: ``python search.py [--config x.yaml]
[--dotted.overrides ...]``. All logic lives in :mod:`cimnas.search`; see docs/search.md."""

import sys

from cimnas.search.cli import exit_now, main

if __name__ == "__main__":
    exit_now(main())
