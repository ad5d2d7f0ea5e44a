"""cimnas: Compute-In-Memory-aware neural architecture search.

Subpackages: :mod:`cimnas.models` (search spaces, supernet, quantizers, predictor),
:mod:`cimnas.hw` (batched CIM cost model), :mod:`cimnas.search` (genome, EvoTorch problem,
objectives, baselines), :mod:`cimnas.data` (LightningDataModules).
"""

__version__ = "0.1.0"
