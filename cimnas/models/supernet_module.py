"""Lightning training of the once-for-all supernet with progressive shrinking.

``python train.py fit --config configs/supernet/fmnist_smoke.yaml``

The phase schedule is data (:class:`~cimnas.models.supernet.PhaseSpec` list): full network →
elastic kernel → elastic depth → elastic width (channels sorted by importance on entry) →
quantization-aware (bit widths sampled with the architecture). The phase of an epoch follows from
the cumulative phase lengths, so resuming a Lightning checkpoint (``--ckpt_path``) continues in
the right phase with the same learning-rate position; phase-entry actions (channel sorting,
clearing the momentum buffers) are recorded in the checkpoint and never repeated.

Each step trains ``subnets_per_step`` subnets on the same batch with manual optimisation
(sandwich rule: largest, smallest, then random ones), backpropagating each loss at once and
stepping once (gradients summed, as OFA). Non-largest subnets are distilled from the largest
one's logits (in-place KD, soft cross-entropy, temperature 1). Subnets are drawn from a generator
seeded by ``(seed, global_step)``, so all DDP ranks train the same subnets
(``strategy: ddp_find_unused_parameters_true``; skipped blocks get no gradient).

Validation: per epoch, the largest and smallest subnet of the current phase (and their lowest-bit
versions in the quantization phase) are BN-recalibrated on ``calib_images`` training images and
scored on the held-out split with torchmetrics accuracy (``val/acc_<name>``; ``val/acc`` is the
largest subnet's).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics.classification import MulticlassAccuracy

from cimnas.models.dynamic_ops import DynamicBatchNorm
from cimnas.models.supernet_export import SupernetExport
from cimnas.space import Architecture, QuantPolicy, get_space
from cimnas.models.supernet import (
    OFASupernet,
    PhaseSpec,
    default_phases,
    fit_resolution,
    load_supernet,
    recalibrate_bn,
    supernet_record,
)

VAL_SUBNETS = ("largest", "smallest", "largest_q", "smallest_q")


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KD loss: cross-entropy against the teacher's softmax (OFA, temperature 1)."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class OFASupernetModule(L.LightningModule):
    """Trains an :class:`OFASupernet` with progressive shrinking.

    Args:
        space: preset name (``apq_mbv2``, ``ofa_mbv3``, ``apq_mbv2_tiny``, ``ofa_resnet50``,
            ``ofa_resnet50_tiny``) or a space dict.
        space_overrides: fields replaced in the space (e.g. ``{num_classes: 100}``).
        phases: the schedule; default :func:`~cimnas.models.supernet.default_phases`.
        kernel_transform / per_channel_weights / dropout: supernet options.
        momentum / nesterov / weight_decay: SGD (no decay on BN, biases and clip ranges).
        label_smoothing: on the label loss of every subnet.
        kd_ratio: weight of the distillation loss.
        float_subnet_prob: in quantization phases, probability that a random subnet is trained
            in full precision (keeps the float accuracies the predictor also measures).
        seed: base seed of subnet sampling (same on every rank).
        calib_images / calib_batch_size: BN recalibration set for validation (OFA: 2000 / 200).
        init_from: weights-only start (a ``save_supernet`` file or a checkpoint of this module).
        channels_last: run the supernet in NHWC layout (:meth:`OFASupernet.use_channels_last`;
            1.2-2.7x faster on CPU, same results).
        export_path: where :class:`SupernetExport` writes the final supernet after ``fit``
            (default ``<run folder>/supernet.pt``; never inside the shipped artifacts: promote a
            trained supernet with ``python -m cimnas.promote --kind supernet``).
    """

    def __init__(
        self,
        space: str | dict = "apq_mbv2",
        space_overrides: dict | None = None,
        phases: list[PhaseSpec] | None = None,
        kernel_transform: bool = True,
        per_channel_weights: bool = True,
        dropout: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 3e-5,
        label_smoothing: float = 0.1,
        kd_ratio: float = 1.0,
        float_subnet_prob: float = 0.25,
        seed: int = 0,
        calib_images: int = 2000,
        calib_batch_size: int = 200,
        init_from: str | None = None,
        export_path: str | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        from cimnas.inputs import refuse_shipped_output

        refuse_shipped_output(export_path, "model.init_args.export_path")
        phase_list = [p if isinstance(p, PhaseSpec) else PhaseSpec(**p) for p in (phases or default_phases())]
        if not phase_list:
            raise ValueError("phases must contain at least one phase")
        self.save_hyperparameters(ignore=["phases"])
        self.hparams["phases"] = [dataclasses.asdict(p) for p in phase_list]  # plain data in checkpoints
        self.automatic_optimization = False
        self.phases = phase_list
        self.space = get_space(space, **(space_overrides or {}))
        self.supernet = OFASupernet(self.space, kernel_transform, per_channel_weights, dropout)
        if init_from:  # validate the start file now, before the job writes anything
            from cimnas.models.supernet import check_state_dict

            check_state_dict(self.supernet, load_supernet(init_from).state_dict(), f"init_from {init_from!r}")
        if channels_last:
            self.supernet.use_channels_last()
        self.metrics = torch.nn.ModuleDict({
            name: MulticlassAccuracy(num_classes=self.space.num_classes, average="micro") for name in VAL_SUBNETS})
        self.entered_phase = -1
        self.channels_sorted = False
        self._val_subnets: dict[str, tuple[Architecture, QuantPolicy | None]] = {}
        self._val_bn: dict[str, dict[str, torch.Tensor]] = {}
        self._train_bn: dict[str, torch.Tensor] | None = None
        self._calib_cache: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ schedule
    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def phase_index(self, epoch: int) -> int:
        end = 0
        for i, p in enumerate(self.phases):
            end += p.epochs
            if epoch < end:
                return i
        return len(self.phases) - 1

    @property
    def phase(self) -> PhaseSpec:
        return self.phases[self.phase_index(self.current_epoch)]

    def phase_progress(self, batch_idx: int) -> float:
        """Epochs elapsed in the current phase (fractional)."""
        idx = self.phase_index(self.current_epoch)
        start = sum(p.epochs for p in self.phases[:idx])
        n = self.trainer.num_training_batches
        frac = batch_idx / n if n and math.isfinite(n) else 0.0
        return self.current_epoch - start + frac

    def lr_at(self, phase: PhaseSpec, progress: float) -> float:
        """Linear warm-up then cosine decay over the phase (per iteration)."""
        if phase.warmup_epochs > 0 and progress < phase.warmup_epochs:
            return phase.lr * (progress + 1e-3) / phase.warmup_epochs
        span = max(phase.epochs - phase.warmup_epochs, 1e-8)
        t = min(max(progress - phase.warmup_epochs, 0.0) / span, 1.0)
        return 0.5 * phase.lr * (1.0 + math.cos(math.pi * t))

    def _enter_phase(self, index: int) -> None:
        phase = self.phases[index]
        if phase.sort_channels and not self.channels_sorted:
            self.supernet.sort_channels()
            self.channels_sorted = True
        if self.entered_phase >= 0:  # new phase: fresh momentum (OFA runs each phase anew)
            for opt in self._optimizers():
                opt.state.clear()
        self.entered_phase = index
        rank_zero_info(f"supernet phase {index} '{phase.name}' from epoch {self.current_epoch}: {phase}")

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        opts = self.optimizers(use_pl_optimizer=False)
        return opts if isinstance(opts, list) else [opts]

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.init_from and self.entered_phase < 0:
            source = load_supernet(self.hparams.init_from)
            self.supernet.load_state_dict(source.state_dict())
            rank_zero_info(f"supernet weights initialised from {self.hparams.init_from}")

    def on_fit_start(self) -> None:
        max_epochs = self.trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and max_epochs != self.total_epochs:
            rank_zero_warn(f"trainer.max_epochs={max_epochs} but the phases add up to {self.total_epochs} epochs")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for name, p in self.supernet.named_parameters():
            # conv / linear weights and kernel-transform matrices decay; BN, biases, clips do not
            (decay if p.ndim > 1 else no_decay).append(p)
        return torch.optim.SGD(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.phases[0].lr, momentum=self.hparams.momentum, nesterov=self.hparams.nesterov)

    def on_train_epoch_start(self) -> None:
        index = self.phase_index(self.current_epoch)
        if index != self.entered_phase:
            self._enter_phase(index)
        self.log("train/phase", float(index), on_step=False, on_epoch=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x)

    # ------------------------------------------------------------------ training
    def step_subnets(self, phase: PhaseSpec, generator: torch.Generator) -> list[tuple[Architecture, QuantPolicy | None, bool]]:
        """Subnets trained on one batch: with ``sampler='sandwich'`` and ``subnets_per_step >= 2``
        the phase's largest and smallest, then random ones; otherwise all random. Third entry: is
        the largest."""
        net = self.supernet
        out: list[tuple[Architecture, QuantPolicy | None, bool]] = []
        n = phase.subnets_per_step
        if n >= 2 and phase.sampler == "sandwich":
            out.append((*net.phase_extreme(phase, largest=True), True))
            out.append((*net.phase_extreme(phase, largest=False), False))
        for _ in range(n - len(out)):
            arch, policy = net.sample_config(generator, phase)
            if policy is not None and float(torch.rand((), generator=generator)) < self.hparams.float_subnet_prob:
                policy = None
            out.append((arch, policy, False))
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        phase = self.phase
        opt = self.optimizers()
        lr = self.lr_at(phase, self.phase_progress(batch_idx))
        for group in opt.optimizer.param_groups:
            group["lr"] = lr
        generator = torch.Generator().manual_seed(self.hparams.seed * 1_000_003 + self.global_step)
        subnets = self.step_subnets(phase, generator)
        teacher = None
        if phase.kd and not subnets[0][2]:
            with torch.no_grad():
                arch, _ = self.supernet.phase_extreme(phase, largest=True)
                self.supernet.set_active(arch, None)
                teacher = self.supernet(fit_resolution(x, arch.resolution)).detach()
        losses = []
        for arch, policy, is_largest in subnets:
            self.supernet.set_active(arch, policy)
            logits = self.supernet(fit_resolution(x, arch.resolution))
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
            if phase.kd and teacher is not None and not is_largest:
                loss = loss + self.hparams.kd_ratio * soft_cross_entropy(logits, teacher)
            if is_largest:
                teacher = logits.detach()
                self.log("train/loss_largest", loss.detach(), prog_bar=False)
            self.manual_backward(loss)
            losses.append(loss.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        mean_loss = torch.stack(losses).mean()
        self.log("train/loss", mean_loss, prog_bar=True)
        self.log("train/lr", lr)
        return mean_loss

    # ------------------------------------------------------------------ evaluation
    def eval_subnets(self) -> dict[str, tuple[Architecture, QuantPolicy | None]]:
        phase = self.phase
        largest, _ = self.supernet.phase_extreme(phase, largest=True)
        smallest, _ = self.supernet.phase_extreme(phase, largest=False)
        out: dict[str, tuple[Architecture, QuantPolicy | None]] = {"largest": (largest, None), "smallest": (smallest, None)}
        if phase.quantize:
            low = QuantPolicy.uniform(self.space, min(self.space.bit_choices))
            out["largest_q"] = (largest, low)
            out["smallest_q"] = (smallest, low)
        return out

    def _bn_state(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{b}": getattr(m.bn, b).clone() for name, m in self.supernet.named_modules()
                if isinstance(m, DynamicBatchNorm) for b in ("running_mean", "running_var")}

    def _load_bn_state(self, state: dict[str, torch.Tensor]) -> None:
        modules = dict(self.supernet.named_modules())
        for key, value in state.items():
            name, buf = key.rsplit(".", 1)
            getattr(modules[name].bn, buf).copy_(value)

    def calibration_batches(self) -> list[torch.Tensor]:
        if self._calib_cache is None:
            dm = self.trainer.datamodule
            if dm is not None and hasattr(dm, "calibration_batches"):
                batches = dm.calibration_batches(self.hparams.calib_images, self.hparams.calib_batch_size,
                                                 seed=self.hparams.seed)
            else:
                loader = self.trainer.train_dataloader
                if loader is None and dm is not None:
                    loader = dm.train_dataloader()
                if loader is None:
                    raise RuntimeError("BN recalibration for evaluation needs training images: use a datamodule "
                                       "with calibration_batches() or train_dataloader()")
                batches, seen = [], 0
                for batch in loader:
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    batches.append(x)
                    seen += x.shape[0]
                    if seen >= self.hparams.calib_images:
                        break
            self._calib_cache = [b for b in batches]
        return self._calib_cache

    def _eval_start(self) -> None:
        self._train_bn = self._bn_state()
        self._val_subnets = self.eval_subnets()
        self._val_bn = {}
        batches = self.calibration_batches()
        for name, (arch, policy) in self._val_subnets.items():
            self.supernet.set_active(arch, policy)
            recalibrate_bn(self.supernet, batches)
            self._val_bn[name] = self._bn_state()

    def _eval_step(self, batch: Any) -> None:
        x, y = batch
        for name, (arch, policy) in self._val_subnets.items():
            self._load_bn_state(self._val_bn[name])
            self.supernet.set_active(arch, policy)
            self.metrics[name].update(self.supernet(fit_resolution(x, arch.resolution)), y)

    def _eval_end(self, prefix: str) -> None:
        for name in self._val_subnets:
            acc = self.metrics[name].compute()
            self.log(f"{prefix}/acc_{name}", acc, prog_bar=name == "largest")
            if name == "largest":
                self.log(f"{prefix}/acc", acc)
            self.metrics[name].reset()
        if self._train_bn is not None:
            self._load_bn_state(self._train_bn)
            self._train_bn = None

    def on_validation_epoch_start(self) -> None:
        self._eval_start()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_start()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # ------------------------------------------------------------------ persistence
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cimnas_supernet"] = supernet_record(self.supernet)
        checkpoint["cimnas_phase"] = {"entered_phase": self.entered_phase, "channels_sorted": self.channels_sorted}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        source = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        self.check_checkpoint(checkpoint, source)
        state = checkpoint.get("cimnas_phase", {})
        self.entered_phase = int(state.get("entered_phase", -1))
        self.channels_sorted = bool(state.get("channels_sorted", False))

    def check_checkpoint(self, checkpoint: dict[str, Any], source: Any) -> None:
        """A checkpoint of this module with the same space and supernet options, else one line."""
        from cimnas.inputs import InputError

        saved = checkpoint.get("cimnas_supernet")
        if saved is None:
            raise InputError(f"checkpoint {source!r}: field 'cimnas_supernet' missing; not a checkpoint of "
                             "OFASupernetModule")
        if saved.get("space") != self.space.to_dict() or saved.get("options") != supernet_record(self.supernet)["options"]:
            found = (saved.get("space") or {}).get("name")
            raise InputError(f"checkpoint {source!r} holds a supernet of space {found!r} with options "
                             f"{saved.get('options')}, but this job's config builds space {self.space.name!r} with "
                             f"options {supernet_record(self.supernet)['options']}; resume with the same config")

    def export_file(self) -> str:
        """Where the end-of-fit export goes: ``export_path``, else ``<run folder>/supernet.pt``."""
        import os

        return self.hparams.export_path or os.path.join(self.trainer.default_root_dir, "supernet.pt")

    def configure_callbacks(self) -> list[L.Callback]:
        """The end-of-fit export (:class:`SupernetExport`) unless the trainer already has one."""
        trainer = self._trainer
        if trainer is not None and any(isinstance(c, SupernetExport) for c in trainer.callbacks):
            return []
        return [SupernetExport()]


__all__ = ["OFASupernetModule", "SupernetExport", "soft_cross_entropy", "VAL_SUBNETS"]
