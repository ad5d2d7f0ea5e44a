"""Query API of the accuracy predictor: ``AccuracyPredictor.from_checkpoint(path).predict(batch)``.

The checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "cimnas.accuracy_predictor/1", "space": SearchSpace.to_dict(),
     "mlp": {"arch_dim", "quant_dim", "hidden_size", "num_layers"}, "state_dict": {...},
     "meta": {...}}

``from_checkpoint`` also accepts APQ's released state dict (``acc_quant.pt``: only the MLP
weights, 772-dim input; the space is then ``apq_mbv2``) and a Lightning checkpoint written by
``python train.py fit --config configs/predictor/<name>.yaml``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from cimnas.io import atomic_torch_save
from cimnas.models.predictor.encoding import ArchEncoder
from cimnas.models.predictor.mlp import AccuracyMLP, mlp_shape_from_state_dict
from cimnas.space import ArchBatch, SearchSpace, get_space

CHECKPOINT_FORMAT = "cimnas.accuracy_predictor/1"


class AccuracyPredictor(nn.Module):
    """Encoder of one search space + :class:`AccuracyMLP`; predicts top-1 accuracy fractions."""

    def __init__(self, space: SearchSpace | str | dict, mlp: AccuracyMLP | None = None,
                 quantized: bool = True, hidden_size: int = 400, num_layers: int = 3,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        self.space = get_space(space)
        self.encoder = ArchEncoder(self.space)
        if mlp is None:
            mlp = AccuracyMLP(self.encoder.arch_dim, self.encoder.quant_dim if quantized else 0,
                              hidden_size, num_layers)
        if mlp.arch_dim != self.encoder.arch_dim or mlp.quant_dim not in (0, self.encoder.quant_dim):
            raise ValueError(
                f"predictor input ({mlp.arch_dim} arch + {mlp.quant_dim} quant dims) does not match "
                f"space {self.space.name!r} ({self.encoder.arch_dim} arch + {self.encoder.quant_dim} quant)")
        self.mlp = mlp
        self.meta = dict(meta or {})

    @property
    def quantized(self) -> bool:
        return self.mlp.quantized

    @property
    def device(self) -> torch.device:
        return self.mlp.regressor.weight.device

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)

    def encode(self, arch_batch: ArchBatch) -> torch.Tensor:
        return self.encoder.encode(arch_batch, quantized=self.quantized)

    @torch.no_grad()
    def predict(self, arch_batch: ArchBatch, validate: bool = True) -> torch.Tensor:
        """Predicted top-1 accuracy (fraction) ``float32 [B]`` on ``arch_batch.device``.

        Computed on the predictor's device (one encode + one MLP pass for the whole batch). A
        full-precision predictor ignores ``arch_batch.bits``."""
        out_device = arch_batch.device
        batch = arch_batch.to(self.device) if out_device != self.device else arch_batch
        idx = self.encoder.indices(batch, validate=validate)
        was_training = self.training
        self.eval()
        pred = self.mlp.forward_indices(idx)
        self.train(was_training)
        return pred.to(out_device)

    # ------------------------------------------------------------------ persistence
    def checkpoint_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "space": self.space.to_dict(),
            "mlp": dict(arch_dim=self.mlp.arch_dim, quant_dim=self.mlp.quant_dim,
                        hidden_size=self.mlp.regressor.in_features, num_layers=len(self.mlp.layers)),
            "state_dict": {k: v.detach().cpu() for k, v in self.mlp.state_dict().items()},
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike) -> None:
        atomic_torch_save(path, self.checkpoint_dict())  # fsync'ed; no temporary file left on error

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], space: SearchSpace | str | dict = "apq_mbv2",
                        meta: dict[str, Any] | None = None) -> "AccuracyPredictor":
        """Build from an APQ-layout MLP state dict (APQ's ``acc_quant.pt``: space ``apq_mbv2``)."""
        mlp = AccuracyMLP(**mlp_shape_from_state_dict(state_dict))
        mlp.load_state_dict(state_dict, strict=True)
        return cls(space, mlp=mlp, meta=meta)

    @classmethod
    def from_apq_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "AccuracyPredictor":
        return cls.from_state_dict(state_dict, "apq_mbv2", meta={"source": "APQ acc_quant.pt layout"})

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        space: SearchSpace | str | dict | None = None) -> "AccuracyPredictor":
        """Load a predictor checkpoint (ours, a Lightning one, or APQ's bare state dict) with
        ``weights_only=True``; a ``cimnas.rank_predictor/1`` file loads as a
        :class:`~cimnas.models.predictor.ranking.RankPredictor` (same ``predict``); ``space``
        overrides the space stored in (or implied by) the file."""
        from cimnas.inputs import InputError, load_torch_file, require_mapping

        data = load_torch_file(path, "predictor", map_location=map_location)
        if not isinstance(data, dict):
            raise InputError(f"predictor file {str(path)!r}: expected a dict (format {CHECKPOINT_FORMAT!r}), "
                             f"found {type(data).__name__}")
        if data.get("format") == "cimnas.rank_predictor/1":  # RankPredictor (ranking.py): same predict API
            from cimnas.models.predictor.ranking import RankPredictor

            return RankPredictor.from_checkpoint_dict(data, space, source=str(path)).to(map_location).eval()
        if data.get("format") == CHECKPOINT_FORMAT:
            require_mapping(data, path, "predictor", ("mlp", "state_dict", "space"))
            try:
                mlp = AccuracyMLP(**data["mlp"])
                mlp.load_state_dict(data["state_dict"], strict=True)
            except (TypeError, RuntimeError, KeyError) as err:
                raise InputError(f"predictor file {str(path)!r}: field 'state_dict' does not match field 'mlp' "
                                 f"{data['mlp']}: {' '.join(str(err).split())[:200]}") from err
            try:
                model = cls(space if space is not None else data["space"], mlp=mlp, meta=data.get("meta"))
            except ValueError as err:
                raise InputError(f"predictor file {str(path)!r}: {err}") from err
        elif "state_dict" in data and "hyper_parameters" in data:  # Lightning checkpoint
            hp = data["hyper_parameters"]
            sd = {k[len("model.mlp."):]: v for k, v in data["state_dict"].items() if k.startswith("model.mlp.")}
            model = cls.from_state_dict(sd, space if space is not None else hp.get("space", "apq_mbv2"),
                                        meta={"source": str(path)})
        elif "layers.0.0.weight" in data:  # APQ's released state-dict layout
            model = cls.from_state_dict(data, space if space is not None else "apq_mbv2",
                                        meta={"source": f"APQ state dict {path}"})
        else:
            raise InputError(f"predictor file {str(path)!r}: unknown predictor checkpoint; expected format {CHECKPOINT_FORMAT!r}, "
                             "a Lightning checkpoint or an APQ state dict (layers.0.0.weight, ...)")
        return model.to(map_location).eval()


def set_hidden_dtype(predictor: Any, dtype: torch.dtype | None, field: str = "hidden_dtype") -> None:
    """Run ``predictor``'s hidden layers in ``dtype`` (None: its parameters' float32): the
    ranking predictor's ensemble members (:attr:`RankPredictor.hidden_dtype`) or an APQ-layout
    predictor's hidden layers (:attr:`AccuracyMLP.hidden_dtype`); ``field`` names the setting in
    the error for any other accuracy source."""
    from cimnas.models.predictor.ranking import RankPredictor

    if isinstance(predictor, RankPredictor):
        predictor.hidden_dtype = dtype
    elif isinstance(predictor, AccuracyPredictor):
        predictor.mlp.hidden_dtype = dtype
    else:
        raise ValueError(f"{field}={str(dtype).replace('torch.', '')}: the accuracy source {type(predictor).__name__} "
                         "has no hidden layers to switch; supported: the ranking and APQ-layout predictors")


__all__ = ["AccuracyPredictor", "CHECKPOINT_FORMAT", "set_hidden_dtype"]
