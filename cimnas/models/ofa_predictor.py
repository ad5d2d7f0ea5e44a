"""Once-for-All's accuracy predictor for the MobileNetV3 space, fed from an :class:`ArchBatch`.

Two OFA layouts are read (state dicts as OFA distributes them, loaded with ``weights_only=True``):

- ``nas``: ``ofa.nas.accuracy_predictor.AccuracyPredictor`` — ``layers.{i}.0`` (Linear + ReLU) x
  ``n_layers``, ``layers.{n}`` (Linear, no bias), ``base_acc``; input = OFA's
  ``MobileNetArchEncoder`` features: one-hot resolution (``image_size_list``), then per block
  (20 = 5 stages x 4) a one-hot kernel over ``ks_list``, then per block a one-hot expand ratio
  over ``expand_list``; blocks a shallower depth skips are all zero (145 columns for 25
  resolutions).
- ``tutorial``: the released ``acc_predictor.pth`` of OFA's tutorial (``ofa.tutorial``) — a
  plain ``nn.Sequential`` (128 -> 400 -> 400 -> 400 -> 1, ReLU); input = kernel one-hots (60),
  expand one-hots (60), resolution one-hot over 112, 128, ..., 224 (``(r - 112) // 16``).

:meth:`OFAAccuracyPredictor.features` builds the whole feature matrix of a batch with tensor
ops (no per-candidate Python loop); :meth:`OFAAccuracyPredictor.predict` returns the accuracy
fraction ``[B]``, so the predictor is an accuracy source of an ``ofa_mbv3`` search
(``cimnas.search.accuracy.load_predictor`` recognises the file :func:`import_ofa_predictor`
writes)::

    python -m cimnas.models.ofa_predictor --checkpoint acc_predictor.pth --space ofa_mbv3 \\
        --out checkpoints/imagenet/ofa_mbv3_predictor.pt
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cimnas.io import atomic_torch_save
from cimnas.space import ArchBatch, SearchSpace, get_space, make_divisible

OFA_PREDICTOR_FORMAT = "cimnas.ofa_accuracy_predictor/1"
LAYOUTS = ("nas", "tutorial")
#: OFA's training resolutions for the MobileNetV3 predictor (128..224, step 4).
OFA_IMAGE_SIZES = tuple(range(128, 225, 4))
TUTORIAL_IMAGE_SIZES = tuple(range(112, 225, 16))


class OFAPredictorError(ValueError):
    """An OFA predictor state dict or an architecture that does not fit the predictor."""


class OFAAccuracyPredictor(nn.Module):
    """OFA's MLP with OFA's parameter names, and OFA's arch encoder as batched tensor ops."""

    def __init__(self, space: SearchSpace | str | dict = "ofa_mbv3", layout: str = "nas",
                 image_size_list: Sequence[int] | None = None, ks_list: Sequence[int] = (3, 5, 7),
                 expand_list: Sequence[int] = (3, 4, 6), depth_list: Sequence[int] = (2, 3, 4),
                 hidden_size: int = 400, n_layers: int = 3):
        super().__init__()
        if layout not in LAYOUTS:
            raise OFAPredictorError(f"layout={layout!r} is not allowed; allowed values: {list(LAYOUTS)}")
        space = get_space(space)
        if space.block_type != "mbconv" or space.final_expand_width is None or not space.expand_ratios:
            raise OFAPredictorError(f"space {space.name!r} is not an OFA-MobileNetV3 space (OFA's predictor "
                                    "encodes kernel / expand ratio / depth of the MobileNetV3 blocks)")
        self.space, self.layout = space, layout
        self.ks_list, self.expand_list = [int(k) for k in ks_list], [int(e) for e in expand_list]
        self.depth_list = [int(d) for d in depth_list]
        if layout == "tutorial":
            image_size_list = TUTORIAL_IMAGE_SIZES
        self.image_size_list = [int(r) for r in (OFA_IMAGE_SIZES if image_size_list is None else image_size_list)]
        n_stage, dmax = space.num_stages, max(self.depth_list)
        if space.num_blocks != n_stage * dmax or any(s.max_depth != dmax for s in space.stages):
            raise OFAPredictorError(f"space {space.name!r}: OFA's encoder needs {n_stage} stages of "
                                    f"max(depth_list)={dmax} blocks, got {[s.max_depth for s in space.stages]}")
        for name, ours, theirs in (("ks_list", space.kernel_choices, self.ks_list),
                                   ("expand_list", space.expand_ratios, self.expand_list)):
            if sorted(float(v) for v in ours) != sorted(float(v) for v in theirs):
                raise OFAPredictorError(f"{name}={theirs} does not match space {space.name!r} ({list(ours)})")
        self.hidden_size, self.n_layers = hidden_size, n_layers
        nb = space.num_blocks
        self.n_dim = len(self.image_size_list) + 2 * len(self.ks_list) * nb if layout == "nas" else 128
        if layout == "tutorial" and (len(self.ks_list), len(self.expand_list), nb) != (3, 3, 20):
            raise OFAPredictorError("layout='tutorial' encodes 20 blocks with 3 kernels and 3 expand ratios")
        if layout == "nas":
            layers: list[nn.Module] = [nn.Sequential(nn.Linear(self.n_dim if i == 0 else hidden_size, hidden_size),
                                                     nn.ReLU()) for i in range(n_layers)]
            layers.append(nn.Linear(hidden_size, 1, bias=False))
            self.layers = nn.Sequential(*layers)
            self.base_acc = nn.Parameter(torch.zeros(1), requires_grad=False)
        else:
            mods: list[nn.Module] = []
            for i in range(n_layers):
                mods += [nn.Linear(self.n_dim if i == 0 else hidden_size, hidden_size), nn.ReLU()]
            mods.append(nn.Linear(hidden_size, 1))
            self.model = nn.Sequential(*mods)
        # encoder tables: hidden width of every (block, expand ratio), kernels, resolutions
        hidden = [[make_divisible(round(c * e), 8) for e in self.expand_list] for c in space.block_in_channels]
        self.register_buffer("_hidden_table", torch.tensor(hidden, dtype=torch.long), persistent=False)
        self.register_buffer("_ks", torch.tensor(self.ks_list, dtype=torch.long), persistent=False)
        self.register_buffer("_sizes", torch.tensor(self.image_size_list, dtype=torch.long), persistent=False)

    # ------------------------------------------------------------------ encoder
    @staticmethod
    def _index(values: torch.Tensor, table: torch.Tensor, what: str) -> torch.Tensor:
        """Position of each value in ``table`` (last dim), checked."""
        hit = values.unsqueeze(-1) == table
        ok = hit.any(-1)
        if not bool(ok.all()):
            bad = torch.nonzero(~ok)[0].tolist()
            raise OFAPredictorError(f"{what}: value {int(values[tuple(bad)])} at index {bad} is not encodable")
        return hit.to(torch.long).argmax(-1)

    def features(self, arch_batch: ArchBatch) -> torch.Tensor:
        """OFA's encoder features ``float32 [B, n_dim]`` of every architecture in the batch."""
        ab = arch_batch.to(self._ks.device)
        active = ab.active_blocks(self.space).unsqueeze(-1)                       # [B, NB, 1]
        k_idx = self._index(ab.kernels, self._ks, "kernels")                     # [B, NB]
        e_idx = self._index(ab.hidden, self._hidden_table.unsqueeze(0), "hidden")  # [B, NB]
        k_hot = F.one_hot(k_idx, len(self.ks_list)) * active
        e_hot = F.one_hot(e_idx, len(self.expand_list)) * active
        if self.layout == "nas":
            r_idx = self._index(ab.resolution, self._sizes, "resolution")
        else:
            r_idx = torch.div(ab.resolution - 112, 16, rounding_mode="floor")
            if bool(((r_idx < 0) | (r_idx >= 8)).any()):
                raise OFAPredictorError("resolution: the tutorial predictor encodes 112..239 px only")
        r_hot = F.one_hot(r_idx, len(self.image_size_list))
        b = ab.batch_size
        parts = (r_hot, k_hot.reshape(b, -1), e_hot.reshape(b, -1)) if self.layout == "nas" else \
            (k_hot.reshape(b, -1), e_hot.reshape(b, -1), r_hot)
        return torch.cat(parts, dim=1).to(torch.float32)

    # ------------------------------------------------------------------ prediction
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] != self.n_dim:
            raise OFAPredictorError(f"features have {features.shape[-1]} columns; this predictor takes {self.n_dim}")
        if self.layout == "nas":
            return self.layers(features).squeeze(-1) + self.base_acc
        return self.model(features).squeeze(-1)

    @torch.no_grad()
    def predict(self, arch_batch: ArchBatch) -> torch.Tensor:
        """Predicted top-1 accuracy (fraction) ``[B]``, on the batch's device."""
        return self(self.features(arch_batch)).to(arch_batch.device)

    # ------------------------------------------------------------------ files
    def config(self) -> dict[str, Any]:
        return {"layout": self.layout, "image_size_list": self.image_size_list, "ks_list": self.ks_list,
                "expand_list": self.expand_list, "depth_list": self.depth_list, "hidden_size": self.hidden_size,
                "n_layers": self.n_layers}

    def save(self, path: str | os.PathLike) -> Path:
        record = {"format": OFA_PREDICTOR_FORMAT, "space": self.space.to_dict(), "config": self.config(),
                  "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}}
        return atomic_torch_save(path, record)

    @classmethod
    def from_ofa_state_dict(cls, state: dict[str, torch.Tensor], space: SearchSpace | str | dict = "ofa_mbv3",
                            image_size_list: Sequence[int] | None = None, **encoder: Any) -> "OFAAccuracyPredictor":
        """Wrap OFA's state dict (either layout, detected from its keys); the resolution list
        of a ``nas`` predictor defaults to OFA's 128..224 step 4 when the input width fits it."""
        if "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if "layers.0.0.weight" in state and "base_acc" in state:
            layout = "nas"
            n_layers = sum(1 for k in state if k.endswith(".0.weight") and k.startswith("layers."))
            in_dim, hidden = state["layers.0.0.weight"].shape[1], state["layers.0.0.weight"].shape[0]
        elif "0.weight" in state:
            layout = "tutorial"
            n_layers = sum(1 for k in state if k.endswith(".weight")) - 1
            in_dim, hidden = state["0.weight"].shape[1], state["0.weight"].shape[0]
            state = {f"model.{k}": v for k, v in state.items()}  # ours wraps the Sequential as .model
        else:
            raise OFAPredictorError(f"unknown OFA predictor state dict (keys {sorted(state)[:6]}); expected "
                                    "ofa.nas AccuracyPredictor keys (layers.0.0.weight, base_acc) or the tutorial's "
                                    "nn.Sequential (0.weight, ...)")
        space = get_space(space)
        if layout == "nas" and image_size_list is None:
            n_res = in_dim - 2 * 3 * space.num_blocks
            if n_res != len(OFA_IMAGE_SIZES):
                raise OFAPredictorError(f"the predictor takes {in_dim} features = {n_res} resolutions + blocks; "
                                        "pass image_size_list (OFA's default has 25: 128..224 step 4)")
        model = cls(space, layout, image_size_list, hidden_size=hidden, n_layers=n_layers, **encoder)
        if model.n_dim != in_dim:
            raise OFAPredictorError(f"the encoder gives {model.n_dim} features, the predictor's first layer takes {in_dim}")
        expected = model.state_dict()
        problems = [f"missing {k} {list(v.shape)}" for k, v in expected.items() if k not in state]
        problems += [f"unknown {k}" for k in state if k not in expected]
        problems += [f"tensor {k!r}: expected shape {list(v.shape)}, found {list(state[k].shape)}"
                     for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if problems:
            raise OFAPredictorError("OFA predictor state dict does not fit: " + "; ".join(problems[:10]))
        model.load_state_dict(state, strict=True)
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "OFAAccuracyPredictor":
        record = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(record, dict) or record.get("format") != OFA_PREDICTOR_FORMAT:
            raise OFAPredictorError(f"{path}: not a {OFA_PREDICTOR_FORMAT!r} file")
        cfg = dict(record["config"])
        model = cls(SearchSpace.from_dict(record["space"]), **cfg)
        model.load_state_dict(record["state_dict"], strict=True)
        return model.to(map_location).eval()


def is_ofa_predictor_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file written by :func:`import_ofa_predictor`."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(record, dict) and record.get("format") == OFA_PREDICTOR_FORMAT


def import_ofa_predictor(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None,
                         space: str = "ofa_mbv3", image_size_list: Sequence[int] | None = None) -> OFAAccuracyPredictor:
    """Read OFA's predictor state dict (``weights_only=True``) and write it with its encoder
    configuration and space (atomic), ready for ``search.py --predictor``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise OFAPredictorError(f"predictor checkpoint {str(path)!r} not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise OFAPredictorError(f"{path}: expected a state dict, found {type(state).__name__}")
    model = OFAAccuracyPredictor.from_ofa_state_dict(state, space, image_size_list)
    if out is not None:
        model.save(out)
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cimnas.models.ofa_predictor --checkpoint FILE --out FILE [--space S]``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="python -m cimnas.models.ofa_predictor",
                            description="Wrap OFA's MobileNetV3 accuracy predictor for cimnas searches.")
    parser.add_argument("--checkpoint", type=str, required=True)
    parser.add_argument("--space", type=str, default="ofa_mbv3")
    parser.add_argument("--image-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--out", type=str, required=True)
    args = parser.parse_args(argv)
    model = import_ofa_predictor(args.checkpoint, args.out, args.space, args.image_sizes)
    print(f"wrote {args.out}: OFA {model.layout} predictor, {model.n_dim} features, space {model.space.name!r}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = ["OFAAccuracyPredictor", "OFAPredictorError", "OFA_PREDICTOR_FORMAT", "import_ofa_predictor",
           "is_ofa_predictor_file", "main"]
