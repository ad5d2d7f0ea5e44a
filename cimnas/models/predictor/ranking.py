"""A ranking accuracy predictor for small tabular NAS data: ridge + an MLP ensemble on APQ
one-hots and capacity features, trained with MSE and a pairwise ranking loss. Pure torch.

    y(x) = mean + std * ( w . [onehot(x), f(x)]  +  1/K sum_k mlp_k([onehot(x), f(x)]) )

``onehot`` is :class:`ArchEncoder`'s APQ layout (arch part, plus the quant part for a
quantization-aware model), ``f`` the standardised :class:`CapacityFeatures` (MACs, parameters,
weight bits, bit-ops, depth per stage, mean kernel / width / bits, optionally the
``is_quantized`` indicator that lets the model train on float records too). The linear term is
fit first in closed form (ridge, ``alpha`` chosen on the validation part); each ensemble member
(its own seed) then fits the residual with MSE + ``rank_weight`` x a logistic pairwise loss.
``K = 0`` is plain ridge; no linear term and ``rank_weight = 0`` is a plain MLP ensemble.

:meth:`RankPredictor.predict` is one batched pass: the one-hot part of the first layer of all
members (and the linear term) is one ``embedding_bag`` over the hot columns, the members'
second layers one batched matmul.

Checkpoint: ``{"format": "cimnas.rank_predictor/1", "space", "config", "state_dict", "meta"}``,
loadable with ``weights_only=True`` and by :meth:`AccuracyPredictor.from_checkpoint`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cimnas.models.predictor.encoding import ArchEncoder
from cimnas.models.predictor.features import CapacityFeatures
from cimnas.models.predictor.rank_inputs import RankInputTables
from cimnas.space import ArchBatch, SearchSpace, get_space

RANK_FORMAT = "cimnas.rank_predictor/1"


def pairwise_logistic_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean ``softplus(margin - sign(t_i - t_j) (p_i - p_j))`` over all ordered pairs whose
    targets differ (RankNet); 0 when no pair differs."""
    dp = pred.unsqueeze(0) - pred.unsqueeze(1)
    dt = target.unsqueeze(0) - target.unsqueeze(1)
    sign = torch.sign(dt)
    mask = sign != 0
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return F.softplus(margin - sign[mask] * dp[mask]).mean()


def kendall_tau(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Kendall tau-b (ties counted as in scipy / torchmetrics)."""
    dp = torch.sign(pred.unsqueeze(0) - pred.unsqueeze(1)).double()
    dt = torch.sign(target.unsqueeze(0) - target.unsqueeze(1)).double()
    num = (dp * dt).sum()
    den = ((dp != 0).sum() * (dt != 0).sum()).double().sqrt()
    return float(num / den) if den > 0 else float("nan")


class RankPredictor(nn.Module):
    """Args:
        space: search space.
        quantized: the one-hots and features include the bit widths (else arch only).
        quantized_indicator: an ``is_quantized`` feature (train on float + quantized records).
        num_members / hidden_size: MLP ensemble size and width (two hidden layers each).
        linear: include the ridge term.
    """

    def __init__(self, space: SearchSpace | str | dict, quantized: bool = True, quantized_indicator: bool = False,
                 num_members: int = 5, hidden_size: int = 64, linear: bool = True,
                 meta: dict[str, Any] | None = None):
        super().__init__()
        self.space = get_space(space)
        self.encoder = ArchEncoder(self.space)
        self.features = CapacityFeatures(self.space, bits=quantized, quantized_indicator=quantized_indicator)
        self._quantized = bool(quantized)
        self.quantized_indicator = bool(quantized_indicator)
        self.num_members, self.hidden_size, self.linear = int(num_members), int(hidden_size), bool(linear)
        onehot = self.onehot_dim
        nf, K, H = self.features.dim, self.num_members, self.hidden_size
        self.register_buffer("feature_mean", torch.zeros(nf))
        self.register_buffer("feature_std", torch.ones(nf))
        self.register_buffer("target_mean", torch.tensor(0.0))
        self.register_buffer("target_std", torch.tensor(1.0))
        self.lin_w = nn.Parameter(torch.zeros(onehot + nf))
        self.lin_b = nn.Parameter(torch.zeros(()))
        self.w1 = nn.Parameter(torch.empty(K, onehot + nf, H))
        self.b1 = nn.Parameter(torch.zeros(K, H))
        self.w2 = nn.Parameter(torch.empty(K, H, H))
        self.b2 = nn.Parameter(torch.zeros(K, H))
        self.w3 = nn.Parameter(torch.empty(K, H))
        self.b3 = nn.Parameter(torch.zeros(K))
        self.reset_members(0)
        self.meta = dict(meta or {})
        #: Opt-in dtype of the ensemble members in :meth:`predict` (None: float32, the default).
        #: ``torch.bfloat16`` gathers the members' first-layer rows and runs their hidden layers in
        #: bf16 (the linear term, the feature standardisation and the output mean stay float32):
        #: ~1.3x faster prediction on CPUs with avx512_bf16; Kendall tau 0.9997 against float32 on
        #: the shipped records, same top 100 (tested in tests/test_predictor_rank.py). Not part of
        #: the state dict; the search's ``predictor_hidden_dtype`` sets it.
        self.hidden_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ properties
    @property
    def quantized(self) -> bool:
        return self._quantized

    @property
    def onehot_dim(self) -> int:
        return self.encoder.dim if self._quantized else self.encoder.arch_dim

    @property
    def device(self) -> torch.device:
        return self.lin_w.device

    def config(self) -> dict[str, Any]:
        return dict(quantized=self._quantized, quantized_indicator=self.quantized_indicator,
                    num_members=self.num_members, hidden_size=self.hidden_size, linear=self.linear)

    def reset_members(self, seed: int) -> None:
        """Kaiming-uniform init of every member from ``seed`` (member k: its own stream)."""
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for w in (self.w1, self.w2):
                bound = (6.0 / w.shape[1]) ** 0.5  # He uniform (ReLU)
                w.copy_((torch.rand(w.shape, generator=g) * 2 - 1) * bound)
            self.w3.copy_((torch.rand(self.w3.shape, generator=g) * 2 - 1) * (1.0 / self.hidden_size) ** 0.5)
            for b in (self.b1, self.b2, self.b3):
                b.zero_()

    # ------------------------------------------------------------------ inputs
    def inputs(self, batch: ArchBatch, is_quantized: torch.Tensor | float | None = None) -> torch.Tensor:
        """Dense model input ``[B, onehot_dim + F]`` (standardised features)."""
        onehot = self.encoder.encode(batch, quantized=self._quantized)
        feats = (self.features(batch, is_quantized) - self.feature_mean) / self.feature_std
        return torch.cat([onehot, feats], 1)

    def encode(self, arch_batch: ArchBatch) -> torch.Tensor:
        """Dense model input (as :meth:`AccuracyPredictor.encode`; ``self(encode(b))`` is standardised)."""
        return self.inputs(arch_batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised prediction ``[B]`` from dense inputs (training path)."""
        out = x @ self.lin_w + self.lin_b if self.linear else x.new_zeros(x.shape[0])
        if self.num_members:
            h = torch.einsum("bi,kih->bkh", x, self.w1).add(self.b1).relu()
            h = torch.einsum("bkh,khj->bkj", h, self.w2).add(self.b2).relu()
            out = out + ((h * self.w3).sum(-1) + self.b3).mean(1)
        return out

    def members_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-member residual outputs ``[B, K]`` (training path)."""
        h = torch.einsum("bi,kih->bkh", x, self.w1).add(self.b1).relu()
        h = torch.einsum("bkh,khj->bkj", h, self.w2).add(self.b2).relu()
        return (h * self.w3).sum(-1) + self.b3

    @torch.no_grad()
    def predict(self, arch_batch: ArchBatch, validate: bool = True, chunk_size: int = 4096,
                lookup_tables: bool = True) -> torch.Tensor:
        """Predicted top-1 accuracy (fraction) ``float32 [B]`` on ``arch_batch.device``; one
        batched pass (``embedding_bag`` over the hot one-hot columns, batched member matmuls).
        A full-precision model ignores ``arch_batch.bits``.

        ``lookup_tables`` (default): the bag of hot columns and the capacity features come
        from per-block tables (:class:`~cimnas.models.predictor.rank_inputs.RankInputTables`),
        chunk by chunk; ``False``: from :meth:`ArchEncoder.indices` and :class:`CapacityFeatures`
        over the whole batch (the reference; same results, bit for bit). A batch with a value
        outside the space's choice lists always takes the reference path. See
        :attr:`hidden_dtype` for the bf16 opt-in."""
        out_device = arch_batch.device
        batch = arch_batch.to(self.device) if out_device != self.device else arch_batch
        out = []
        if lookup_tables:
            tables = self.input_tables
            for start in range(0, batch.batch_size, chunk_size):
                inputs = tables(batch[start:start + chunk_size])
                if inputs is None:  # a value outside the tables: the reference path decides
                    out = []
                    break
                index, offsets, raw = inputs
                out.append(self._chunk(index, offsets, None, (raw - self.feature_mean) / self.feature_std))
        if not out:
            idx = self.encoder.indices(batch, validate=validate)
            feats = (self.features(batch) - self.feature_mean) / self.feature_std
            if self._quantized:
                index = torch.cat([idx.arch_index, idx.quant_index + self.encoder.arch_dim], 1)
                weight = torch.cat([idx.arch_weight, idx.quant_weight], 1)
            else:
                index, weight = idx.arch_index, idx.arch_weight
            for start in range(0, batch.batch_size, chunk_size):
                rows = slice(start, start + chunk_size)
                out.append(self._chunk(index[rows], None, weight[rows], feats[rows]))
        pred = torch.cat(out) * self.target_std + self.target_mean
        return pred.to(out_device)

    @property
    def input_tables(self) -> RankInputTables:
        """The per-block lookup tables of :meth:`predict` (built on first use)."""
        tables = self.__dict__.get("_input_tables")
        if tables is None:
            tables = self.__dict__["_input_tables"] = RankInputTables(self.encoder, self.features, self._quantized)
        return tables

    def _first_layer(self) -> dict[str, torch.Tensor]:
        """The first layer with the linear term as column 0: ``onehot [D, 1 + K*H]``, ``feat_w
        [F, 1 + K*H]``, ``bias [1 + K*H]`` (and, with :attr:`hidden_dtype`, the members' part and
        their other layers in that dtype); rebuilt when a parameter changed (in place: its
        version counter, or replaced / moved: its storage)."""
        params = (self.lin_w, self.lin_b, self.w1, self.b1, self.w2, self.b2, self.w3)
        key = tuple((p.data_ptr(), p._version) for p in params) + (self.linear, self.hidden_dtype)
        cached = self.__dict__.get("_first_layer_cache")
        if cached is None or cached[0] != key:
            K, H, D = self.num_members, self.hidden_size, self.onehot_dim
            w1 = self.w1.detach().permute(1, 0, 2).reshape(D + self.features.dim, K * H)
            table = torch.cat([self.lin_w.detach().unsqueeze(1) * float(self.linear), w1], 1)
            bias = torch.cat([(self.lin_b.detach() * float(self.linear)).view(1), self.b1.detach().flatten()])
            layer = {"onehot": table[:D].contiguous(), "feat_w": table[D:], "bias": bias}
            dt = self.hidden_dtype
            if dt is not None:
                layer.update(onehot_lin=table[:D, :1].contiguous(), feat_w_lin=table[D:, :1], bias_lin=bias[:1],
                             onehot_members=table[:D, 1:].to(dt).contiguous(), feat_w_members=table[D:, 1:].to(dt),
                             bias_members=bias[1:].to(dt), b2=self.b2.detach().to(dt).unsqueeze(1),
                             w2=self.w2.detach().to(dt), w3=self.w3.detach().to(dt).unsqueeze(-1))
            cached = self.__dict__["_first_layer_cache"] = (key, layer)
        return cached[1]

    def _chunk(self, index: torch.Tensor, offsets: torch.Tensor | None, weight: torch.Tensor | None,
               feats: torch.Tensor) -> torch.Tensor:
        """Standardised prediction of one chunk from its bag of hot one-hot columns (1-D
        ``index`` + ``offsets``, or ``index [b, n]`` + 0/1 ``weight``) and standardised features."""
        layer, K, H = self._first_layer(), self.num_members, self.hidden_size
        dt = self.hidden_dtype
        if dt is None or not K:
            z = F.embedding_bag(index, layer["onehot"], offsets, per_sample_weights=weight, mode="sum")
            z = torch.addmm(z, feats, layer["feat_w"]).add_(layer["bias"])
            y = z[:, 0]
            if K:
                h = z[:, 1:].view(-1, K, H).relu_().transpose(0, 1)  # [K, b, H]
                h = torch.baddbmm(self.b2.unsqueeze(1), h, self.w2).relu_()
                y = y + (torch.bmm(h, self.w3.unsqueeze(-1)).squeeze(-1) + self.b3.unsqueeze(1)).mean(0)
            return y
        # opt-in: the linear term in float32, the members' layers in ``dt``
        y = F.embedding_bag(index, layer["onehot_lin"], offsets, per_sample_weights=weight, mode="sum")
        y = torch.addmm(y, feats, layer["feat_w_lin"]).add_(layer["bias_lin"]).squeeze(1)
        z = F.embedding_bag(index, layer["onehot_members"], offsets,
                            per_sample_weights=None if weight is None else weight.to(dt), mode="sum")
        z = torch.addmm(z, feats.to(dt), layer["feat_w_members"]).add_(layer["bias_members"])
        h = z.view(-1, K, H).relu_().transpose(0, 1)
        h = torch.baddbmm(layer["b2"], h, layer["w2"]).relu_()
        return y + (torch.bmm(h, layer["w3"]).squeeze(-1).float() + self.b3.unsqueeze(1)).mean(0)

    # ------------------------------------------------------------------ persistence
    def checkpoint_dict(self) -> dict[str, Any]:
        return {"format": RANK_FORMAT, "space": self.space.to_dict(), "config": self.config(),
                "state_dict": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
                "meta": self.meta}

    def save(self, path: str | os.PathLike) -> None:
        from cimnas.io import atomic_torch_save

        atomic_torch_save(path, self.checkpoint_dict())

    @classmethod
    def from_checkpoint_dict(cls, data: dict[str, Any], space: SearchSpace | str | dict | None = None,
                             source: str = "checkpoint") -> "RankPredictor":
        if data.get("format") != RANK_FORMAT:
            raise ValueError(f"{source}: format {data.get('format')!r}; expected {RANK_FORMAT!r}")
        for key in ("space", "config", "state_dict"):
            if key not in data:
                raise ValueError(f"{source}: rank predictor checkpoint has no {key!r} entry")
        model = cls(space if space is not None else data["space"], meta=data.get("meta"), **data["config"])
        model.load_state_dict(data["state_dict"], strict=True)
        return model.eval()

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu",
                        space: SearchSpace | str | dict | None = None) -> "RankPredictor":
        data = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a predictor checkpoint (got {type(data).__name__})")
        return cls.from_checkpoint_dict(data, space, source=str(path)).to(map_location)


def fit_rank_predictor(model: RankPredictor, x_batch: ArchBatch, y: torch.Tensor, is_quantized: torch.Tensor,
                       val: tuple[ArchBatch, torch.Tensor] | None = None, seed: int = 0,
                       alphas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0), alpha: float | None = None,
                       epochs: int = 200, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4,
                       rank_weight: float = 1.0) -> dict[str, Any]:
    """Fit ``model`` in place: feature / target standardisation from the training rows, ridge
    (``alpha`` fixed, or the best of ``alphas`` by validation Kendall tau; the first of
    ``alphas`` without ``val``), then each member on the residual. Returns what was chosen."""
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        raw = model.features(x_batch, is_quantized)
        model.feature_mean.copy_(raw.mean(0))
        model.feature_std.copy_(raw.std(0).clamp(min=1e-6) if len(raw) > 1 else torch.ones_like(raw[0]))
        model.target_mean.fill_(float(y.mean()))
        model.target_std.fill_(float(y.std()) if len(y) > 1 and float(y.std()) > 1e-12 else 1.0)
    x = model.inputs(x_batch, is_quantized).detach()
    t = ((y - model.target_mean) / model.target_std).float()
    info: dict[str, Any] = {}
    with torch.no_grad():
        model.lin_w.zero_()
        model.lin_b.zero_()
        if model.linear:
            xd, td = x.double(), t.double()
            xm = xd.mean(0)
            xc = xd - xm
            gram, rhs = xc.T @ xc, xc.T @ (td - td.mean())
            eye = torch.eye(gram.shape[0], dtype=torch.float64)
            xv = model.inputs(val[0], torch.ones(val[0].batch_size)).detach().double() if val is not None else None
            best = None
            for a in ((alpha,) if alpha is not None else alphas):
                w = torch.linalg.solve(gram + a * eye, rhs)
                b = td.mean() - xm @ w
                score = kendall_tau((xv @ w + b).float(), val[1]) if xv is not None else 0.0
                if best is None or score > best[0]:
                    best = (score, a, w, b)
            info["ridge_alpha"] = best[1]
            model.lin_w.copy_(best[2].float())
            model.lin_b.fill_(float(best[3]))
        residual = t - (x @ model.lin_w + model.lin_b)
    if model.num_members:
        model.reset_members(seed)
        params = [model.w1, model.b1, model.w2, model.b2, model.w3, model.b3]
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        n = len(t)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                rows = perm[start:start + batch_size]
                out = model.members_forward(x[rows])  # [b, K]: each member trained on its own loss
                loss = F.mse_loss(out, residual[rows].unsqueeze(1).expand_as(out))
                if rank_weight:
                    full = out + (x[rows] @ model.lin_w + model.lin_b).detach().unsqueeze(1)
                    loss = loss + rank_weight * torch.stack(
                        [pairwise_logistic_loss(full[:, k], t[rows]) for k in range(model.num_members)]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        info["final_loss"] = float(loss.detach())
    model.eval()
    return info


__all__ = ["RankPredictor", "RANK_FORMAT", "fit_rank_predictor", "pairwise_logistic_loss", "kendall_tau"]
