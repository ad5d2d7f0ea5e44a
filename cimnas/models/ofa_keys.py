"""The key mapping between a cimnas supernet's state dict and an Once-for-All network's.

:func:`ofa_key` renames one cimnas key (rules per block type: MobileNet blocks and fixed layers,
ResNet bottlenecks and stem), :func:`key_map` gives ``{ofa_key: cimnas_key}`` of a whole supernet,
and :func:`normalise_key` accepts the older key names of released OFA checkpoints.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cimnas.models.ofa_config import OFAImportError
from cimnas.space import SearchSpace

if TYPE_CHECKING:
    from cimnas.models.supernet import OFASupernet

_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_MB_BLOCK_RULES = [
    (r"expand\.weight", "conv.inverted_bottleneck.conv.conv.weight"),
    (rf"bn1\.bn\.{_BN}", r"conv.inverted_bottleneck.bn.bn.\1"),
    (r"dw\.weight", "conv.depth_conv.conv.conv.weight"),
    (r"dw\.transforms\.(\d+to\d+)", r"conv.depth_conv.conv.\1_matrix"),
    (rf"bn2\.bn\.{_BN}", r"conv.depth_conv.bn.bn.\1"),
    (r"se\.(reduce|expand)\.(weight|bias)", r"conv.depth_conv.se.fc.\1.\2"),
    (r"project\.weight", "conv.point_linear.conv.conv.weight"),
    (rf"bn3\.bn\.{_BN}", r"conv.point_linear.bn.bn.\1"),
]
_MB_FIXED_RULES = [
    (r"stem\.conv\.weight", "first_conv.conv.weight"),
    (rf"stem\.bn\.bn\.{_BN}", r"first_conv.bn.\1"),
    (r"first_block\.depthwise\.conv\.weight", "blocks.0.conv.depth_conv.conv.weight"),
    (rf"first_block\.depthwise\.bn\.bn\.{_BN}", r"blocks.0.conv.depth_conv.bn.\1"),
    (r"first_block\.project\.conv\.weight", "blocks.0.conv.point_linear.conv.weight"),
    (rf"first_block\.project\.bn\.bn\.{_BN}", r"blocks.0.conv.point_linear.bn.\1"),
    (r"head\.final_expand\.conv\.weight", "final_expand_layer.conv.weight"),
    (rf"head\.final_expand\.bn\.bn\.{_BN}", r"final_expand_layer.bn.\1"),
    (r"head\.feature_mix\.conv\.weight", "feature_mix_layer.conv.weight"),
    (rf"head\.feature_mix\.bn\.bn\.{_BN}", r"feature_mix_layer.bn.\1"),
    (r"head\.classifier\.(weight|bias)", r"classifier.linear.\1"),
]
_RES_BLOCK_RULES = [
    (r"conv([123])\.weight", r"conv\1.conv.conv.weight"),
    (rf"bn([123])\.bn\.{_BN}", r"conv\1.bn.bn.\2"),
    (r"downsample\.weight", "downsample.conv.conv.weight"),
    (rf"downsample_bn\.bn\.{_BN}", r"downsample.bn.bn.\1"),
]
_RES_FIXED_RULES = [
    (r"stem\.([02])\.conv\.weight", r"input_stem.\1.conv.conv.weight"),
    (rf"stem\.([02])\.bn\.bn\.{_BN}", r"input_stem.\1.bn.bn.\2"),
    (r"stem\.1\.conv\.weight", "input_stem.1.conv.conv.conv.weight"),
    (rf"stem\.1\.bn\.bn\.{_BN}", r"input_stem.1.conv.bn.bn.\1"),
    (r"head\.classifier\.(weight|bias)", r"classifier.linear.linear.\1"),
]
#: cimnas-only state: activation-quantizer ranges (no counterpart in a float OFA network).
_CIMNAS_ONLY = re.compile(r".*\.input_quantizer\.(alpha|initialized)$")


def ofa_key(space: SearchSpace, cimnas_key: str) -> str | None:
    """OFA state-dict key of a cimnas supernet key (None for cimnas-only state)."""
    if _CIMNAS_ONLY.match(cimnas_key):
        return None
    resnet = space.block_type == "bottleneck"
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", cimnas_key)
    if m:
        b, rest = int(m.group(1)), m.group(2)
        for pattern, repl in (_RES_BLOCK_RULES if resnet else _MB_BLOCK_RULES):
            if re.fullmatch(pattern, rest):
                return f"blocks.{b if resnet else b + 1}." + re.sub(pattern, repl, rest)
    else:
        for pattern, repl in (_RES_FIXED_RULES if resnet else _MB_FIXED_RULES):
            if re.fullmatch(pattern, cimnas_key):
                return re.sub(pattern, repl, cimnas_key)
    raise OFAImportError(f"cimnas tensor {cimnas_key!r} has no OFA counterpart (space {space.name!r})")


def key_map(model: OFASupernet) -> dict[str, str]:
    """``{ofa_key: cimnas_key}`` for every tensor the two networks share."""
    out = {}
    for ck in model.state_dict():
        ok = ofa_key(model.space, ck)
        if ok is not None:
            out[ok] = ck
    return out


def normalise_key(key: str, expected: set[str]) -> str:
    """The key names of released OFA checkpoints (older ``mobile_inverted_conv`` blocks, BN /
    conv / linear wrappers with or without their dynamic ``.bn.bn`` / ``.conv.conv`` level), as
    OFA's own ``load_state_dict`` accepts them."""
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    if key in expected:
        return key
    for old, new in ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."),
                     (".linear.", ".linear.linear."), ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight")):
        if old in key and key.replace(old, new) in expected:
            return key.replace(old, new)
    return key


__all__ = ["key_map", "normalise_key", "ofa_key"]
