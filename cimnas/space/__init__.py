"""The shared vocabulary at the bottom of cimnas: search spaces, architectures, bit policies and
their batched tensor form. Nothing here knows torch.nn, hardware or the search."""

from cimnas.space.arch import Architecture, ArchBatch, QuantPolicy, check_mapping_keys
from cimnas.space.spec import (BIT_FIELDS, PRESETS, SearchSpace, SpaceError, StageSpec, apq_mbv2,
                               apq_mbv2_tiny, get_space, make_divisible, ofa_mbv3, ofa_resnet50,
                               ofa_resnet50_tiny)

__all__ = [
    "BIT_FIELDS", "SpaceError", "make_divisible", "StageSpec", "SearchSpace", "apq_mbv2",
    "ofa_mbv3", "apq_mbv2_tiny", "ofa_resnet50", "ofa_resnet50_tiny", "PRESETS", "get_space",
    "Architecture", "QuantPolicy", "ArchBatch", "check_mapping_keys",
]
