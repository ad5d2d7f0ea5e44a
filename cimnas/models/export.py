"""Saving, rebuilding and ONNX-exporting fine-tuned static subnets.

A subnet file is a plain dict, loadable with ``torch.load(path, weights_only=True)``::

    {"format": "cimnas.subnet/1", "space": SearchSpace.to_dict(), "architecture": {...},
     "quantization": {...per-block bit widths...}, "options": {supernet constructor options},
     "layer_bits": [[name, weight_bits, input_bits], ...], "meta": {...}, "state_dict": {...}}

:func:`load_subnet` rebuilds the same :class:`~cimnas.models.static.StaticSubnet` (same modules,
bit widths and quantizer signs) from the space, architecture and policy, then loads the weights,
so the reloaded network computes exactly the same outputs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimnas.models.quant import QuantConv2d, QuantLinear
from cimnas.space import Architecture, QuantPolicy, SearchSpace
from cimnas.models.static import StaticSubnet

SUBNET_FORMAT = "cimnas.subnet/1"


def layer_bit_widths(net: nn.Module) -> list[tuple[str, int, int]]:
    """``(name, weight_bits, input_bits)`` of every quantized conv / linear layer, in module order."""
    return [(name, int(m.weight_bits), int(m.input_bits)) for name, m in net.named_modules()
            if isinstance(m, (QuantConv2d, QuantLinear))]


def _block_convs(block: nn.Module) -> tuple[list[QuantConv2d], QuantConv2d]:
    """(pointwise convs, spatial conv) of a static MBConv or bottleneck block."""
    if hasattr(block, "depthwise"):  # StaticMBConv: expand (optional) / depthwise / project
        return [c.conv for c in (block.expand, block.project) if c is not None], block.depthwise.conv
    if hasattr(block, "conv2"):  # StaticBottleneck: 1x1 / kxk / 1x1 (+ 1x1 shortcut conv)
        pointwise = [block.conv1.conv, block.conv3.conv]
        if block.downsample is not None:
            pointwise.append(block.downsample.conv)
        return pointwise, block.conv2.conv
    raise TypeError(f"unknown static block type {type(block).__name__}")


def block_bit_widths(net: StaticSubnet) -> list[tuple[int, int, int, int]]:
    """Per elastic block of a static subnet: ``(pw_w, pw_a, dw_w, dw_a)`` read from its layers
    (the 1x1 convs of a block must agree on the pointwise bits; the spatial conv gives ``dw_*``)."""
    out = []
    for i, block in enumerate(net.blocks):
        pointwise, spatial = _block_convs(block)
        pw = {(c.weight_bits, c.input_bits) for c in pointwise}
        if len(pw) != 1:
            raise ValueError(f"block {i}: its 1x1 convs have different bit widths {sorted(pw)}")
        (pw_w, pw_a), = pw
        out.append((pw_w, pw_a, spatial.weight_bits, spatial.input_bits))
    return out


def build_static_subnet(space: SearchSpace, arch: Architecture, policy: QuantPolicy | None,
                        options: dict[str, Any] | None = None) -> StaticSubnet:
    """An (untrained) static subnet with the structure that ``OFASupernet.export_subnet`` gives
    for ``(arch, policy)``; weights are meant to be loaded afterwards."""
    from cimnas.models.supernet import OFASupernet  # heavy; only needed to rebuild

    with torch.random.fork_rng(devices=[]):
        supernet = OFASupernet(space, **(options or {}))
    return supernet.export_subnet(arch, policy)


def save_subnet(net: StaticSubnet, path: str | os.PathLike, space: SearchSpace, arch: Architecture,
                policy: QuantPolicy | None, options: dict[str, Any] | None = None,
                meta: dict[str, Any] | None = None) -> Path:
    """Write ``net`` with its architecture and bit widths as metadata (atomic write)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "format": SUBNET_FORMAT,
        "space": space.to_dict(),
        "architecture": arch.to_dict(),
        "quantization": None if policy is None else policy.to_dict(),
        "options": dict(options or {}),
        "layer_bits": [list(t) for t in layer_bit_widths(net)],
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def read_subnet_record(path: str | os.PathLike) -> dict[str, Any]:
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != SUBNET_FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"{path}: format={found!r} is not allowed; allowed values: [{SUBNET_FORMAT!r}]")
    return record


def load_subnet(path: str | os.PathLike) -> StaticSubnet:
    """Rebuild the network saved by :func:`save_subnet` (eval mode) and check its bit widths."""
    record = read_subnet_record(path)
    space = SearchSpace.from_dict(record["space"])
    arch = Architecture.from_dict(record["architecture"]).validate(space)
    policy = None if record["quantization"] is None else QuantPolicy.from_dict(record["quantization"]).validate(space)
    net = build_static_subnet(space, arch, policy, record.get("options"))
    net.load_state_dict(record["state_dict"], strict=True)
    bits = [list(t) for t in layer_bit_widths(net)]
    if bits != [list(t) for t in record["layer_bits"]]:
        raise ValueError(f"{path}: rebuilt network's layer bit widths differ from the recorded ones")
    return net.eval()


def onnx_available() -> bool:
    return importlib.util.find_spec("onnx") is not None


def export_onnx(net: nn.Module, path: str | os.PathLike, resolution: int, in_channels: int,
                opset: int = 17) -> Path | None:
    """ONNX export of the static network (eval mode, fake quantization as Round / Clip ops).

    ``onnx`` is an optional package: without it, returns None and says so (the state dict file
    is the primary export)."""
    if not onnx_available():
        print(f"ONNX export skipped: the optional package 'onnx' is not installed (pip install onnx); "
              f"{path} not written")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    example = torch.zeros(1, in_channels, resolution, resolution, device=device)
    tmp = path.with_name(path.name + ".tmp")
    try:
        kwargs = dict(input_names=["images"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
        if importlib.util.find_spec("onnxscript") is None:
            kwargs["dynamo"] = False  # the TorchScript exporter needs only onnx
        torch.onnx.export(net, (example,), str(tmp), **kwargs)
        os.replace(tmp, path)
    finally:
        net.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path


__all__ = ["SUBNET_FORMAT", "layer_bit_widths", "block_bit_widths", "build_static_subnet", "save_subnet",
           "read_subnet_record", "load_subnet", "onnx_available", "export_onnx"]
