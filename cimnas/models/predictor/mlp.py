"""APQ-shaped accuracy MLP (``docs/reference/cimnas-reference-code.md`` §1.6).

    h1 = ReLU(W_arch x_arch + b_arch) [+ W_q x_quant + b_q]       (quant branch: no ReLU)
    h  = ReLU(W_3 ReLU(W_2 h1 + b_2) + b_3)
    y  = w_out . h + b_out                                         (accuracy fraction)

Parameter names follow APQ's ``utils/accuracy_predictor.py`` (``layers.{i}.0``, ``quantize_fc``,
``regressor``) so APQ's released ``acc_quant.pt`` state dict (772-dim input) loads with
``strict=True``, and a full-precision predictor (no ``quantize_fc``) transfers into the
quantization-aware one with ``strict=False`` exactly as APQ's predictor transfer does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cimnas.models.predictor.encoding import EncodedIndices


class AccuracyMLP(nn.Module):
    """``arch_dim`` -> ``hidden_size`` x ``num_layers`` -> 1; a quant branch when ``quant_dim > 0``."""

    def __init__(self, arch_dim: int, quant_dim: int = 0, hidden_size: int = 400, num_layers: int = 3):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers} must be >= 1")
        self.arch_dim, self.quant_dim = arch_dim, quant_dim
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(arch_dim if i == 0 else hidden_size, hidden_size), nn.ReLU())
            for i in range(num_layers)
        )
        self.quantize_fc = nn.Linear(quant_dim, hidden_size) if quant_dim > 0 else None
        self.regressor = nn.Linear(hidden_size, 1)
        #: Opt-in dtype of the hidden layers in :meth:`forward_indices` (None: the parameters'
        #: dtype). ``torch.bfloat16`` runs the [B, 400] x [400, 400] matmuls in bf16 (faster on
        #: CPUs with avx512_bf16 / AMX and on GPUs); the first layer's sums and the regressor stay
        #: in the parameters' dtype. Agreement with fp32 on the shipped records is tested
        #: (tests/test_hw_speed.py). Not part of the state dict.
        self.hidden_dtype: torch.dtype | None = None

    @property
    def quantized(self) -> bool:
        return self.quantize_fc is not None

    @property
    def input_dim(self) -> int:
        return self.arch_dim + self.quant_dim

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[1:]:
            h = layer(h)
        return self.regressor(h).squeeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Dense features ``[B, arch_dim (+ quant_dim)]`` -> predictions ``[B]``."""
        if features.shape[-1] != self.input_dim:
            raise ValueError(f"features have {features.shape[-1]} columns; this predictor takes "
                             f"{self.input_dim} ({self.arch_dim} arch + {self.quant_dim} quant)")
        h = self.layers[0](features[:, : self.arch_dim])
        if self.quantize_fc is not None:
            h = h + self.quantize_fc(features[:, self.arch_dim:])
        return self._tail(h)

    def forward_indices(self, idx: EncodedIndices, chunk_size: int = 8192) -> torch.Tensor:
        """Same result as :meth:`forward` on the dense one-hot vector, but the first layer is an
        ``embedding_bag`` sum over the (at most 6 NB) hot columns instead of a dense matmul.
        In-place activations over row chunks keep the [chunk, 400] activations in cache.
        Inference only (in-place ops): call under ``torch.no_grad()``."""
        first = self.layers[0][0]
        # embedding_bag wants rows = input columns, contiguous (a strided view is ~10x slower)
        arch_table = first.weight.t().contiguous()
        quant_table = self.quantize_fc.weight.t().contiguous() if self.quantize_fc is not None else None
        hidden = self.hidden_dtype if self.hidden_dtype not in (None, first.weight.dtype) else None
        weights = [(layer[0].bias, layer[0].weight.t()) for layer in self.layers[1:]]
        if hidden is not None:
            weights = [(b.to(hidden), w.to(hidden)) for b, w in weights]
        out = []
        for start in range(0, idx.arch_index.shape[0], chunk_size):  # cache-sized row chunks
            rows = slice(start, start + chunk_size)
            h = F.embedding_bag(idx.arch_index[rows], arch_table, per_sample_weights=idx.arch_weight[rows],
                                mode="sum").add_(first.bias).relu_()
            if quant_table is not None:
                h += F.embedding_bag(idx.quant_index[rows], quant_table,
                                     per_sample_weights=idx.quant_weight[rows], mode="sum")
                h += self.quantize_fc.bias
            if hidden is not None:
                h = h.to(hidden)
            for bias, weight_t in weights:
                h = torch.addmm(bias, h, weight_t).relu_()
            if hidden is not None:
                h = h.to(self.regressor.weight.dtype)
            out.append(torch.addmm(self.regressor.bias, h, self.regressor.weight.t()).squeeze(-1))
        return torch.cat(out)

    def init_output_bias(self, mean_accuracy: float) -> None:
        """Start from "predict the mean" (OFA/APQ: stabilises training)."""
        with torch.no_grad():
            self.regressor.bias.fill_(float(mean_accuracy))

    def scale_output(self, scale: float, shift: float) -> None:
        """Make the output ``scale * y + shift`` (fold or unfold a target standardisation into the
        regressor, so the state-dict layout stays APQ's)."""
        with torch.no_grad():
            self.regressor.weight.mul_(float(scale))
            self.regressor.bias.mul_(float(scale)).add_(float(shift))

    def zero_quant_branch(self) -> None:
        """Make the quant branch a no-op, so a transferred predictor starts as the fp one."""
        if self.quantize_fc is not None:
            with torch.no_grad():
                self.quantize_fc.weight.zero_()
                self.quantize_fc.bias.zero_()

    def load_full_precision(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Predictor transfer (APQ): copy every layer of a full-precision predictor's state dict;
        the quant branch keeps its own initialisation."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        allowed_missing = {"quantize_fc.weight", "quantize_fc.bias"}
        if unexpected or set(missing) - allowed_missing:
            raise ValueError(f"not a full-precision predictor state dict of this shape: missing "
                             f"{sorted(set(missing) - allowed_missing)}, unexpected {sorted(unexpected)}")


def mlp_shape_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """``arch_dim``, ``quant_dim``, ``hidden_size``, ``num_layers`` of an APQ-layout state dict."""
    if "layers.0.0.weight" not in state_dict or "regressor.weight" not in state_dict:
        raise ValueError(f"not an APQ-layout predictor state dict (keys: {sorted(state_dict)[:8]}...); "
                         "expected layers.0.0.weight, ..., regressor.weight [, quantize_fc.weight]")
    hidden_size, arch_dim = state_dict["layers.0.0.weight"].shape
    num_layers = len({k.split(".")[1] for k in state_dict if k.startswith("layers.")})
    quant_dim = state_dict["quantize_fc.weight"].shape[1] if "quantize_fc.weight" in state_dict else 0
    return dict(arch_dim=int(arch_dim), quant_dim=int(quant_dim), hidden_size=int(hidden_size),
                num_layers=int(num_layers))


__all__ = ["AccuracyMLP", "mlp_shape_from_state_dict"]
