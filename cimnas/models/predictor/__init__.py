"""Quantization-aware accuracy predictor: encoding, APQ MLP, training, query API, measurement.

The search calls :meth:`AccuracyPredictor.from_checkpoint` once and then
:meth:`AccuracyPredictor.predict` on whole :class:`~cimnas.space.ArchBatch` populations. The
query side (encoding, MLP, :class:`AccuracyPredictor`) imports only torch; the training side
(:class:`PredictorModule`, :class:`PredictorDataModule`, the end-of-fit callback
:class:`PredictorExport`) imports Lightning on first access.
"""

from typing import Any

from cimnas.models.predictor.encoding import ArchEncoder, EncodedIndices
from cimnas.models.predictor.mlp import AccuracyMLP
from cimnas.models.predictor.predictor import AccuracyPredictor

_TRAINING = {"PredictorModule": "cimnas.models.predictor.module",
             "PredictorDataModule": "cimnas.models.predictor.data",
             "PredictorExport": "cimnas.models.predictor.callbacks"}


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        import importlib

        value = getattr(importlib.import_module(_TRAINING[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AccuracyPredictor", "AccuracyMLP", "ArchEncoder", "EncodedIndices", "PredictorModule",
           "PredictorDataModule", "PredictorExport"]
