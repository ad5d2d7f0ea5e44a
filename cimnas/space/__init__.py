"""The shared vocabulary at the bottom of cimnas: search spaces, architectures, bit policies and
their batched tensor form. Nothing here knows torch.nn, hardware or the search."""

from cimnas.space.arch import Architecture, ArchBatch, QuantPolicy, check_mapping_keys
from cimnas.space.presets import (PRESETS, apq_mbv2, apq_mbv2_tiny, get_space, ofa_mbv3, ofa_resnet50,
                                  ofa_resnet50_tiny)
from cimnas.space.spec import BIT_FIELDS, SearchSpace, SpaceError, StageSpec, make_divisible

__all__ = [
    "BIT_FIELDS", "SpaceError", "make_divisible", "StageSpec", "SearchSpace", "apq_mbv2",
    "ofa_mbv3", "apq_mbv2_tiny", "ofa_resnet50", "ofa_resnet50_tiny", "PRESETS", "get_space",
    "Architecture", "QuantPolicy", "ArchBatch", "check_mapping_keys",
]
