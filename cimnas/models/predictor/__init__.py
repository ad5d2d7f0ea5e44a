"""Quantization-aware accuracy predictor: encoding, APQ MLP, training, query API, measurement.

The search calls :meth:`AccuracyPredictor.from_checkpoint` once and then
:meth:`AccuracyPredictor.predict` on whole :class:`~cimnas.space.ArchBatch` populations.
"""

from cimnas.models.predictor.data import PredictorDataModule
from cimnas.models.predictor.encoding import ArchEncoder, EncodedIndices
from cimnas.models.predictor.mlp import AccuracyMLP
from cimnas.models.predictor.module import PredictorModule
from cimnas.models.predictor.predictor import AccuracyPredictor

__all__ = ["AccuracyPredictor", "AccuracyMLP", "ArchEncoder", "EncodedIndices", "PredictorModule",
           "PredictorDataModule"]
