"""Architectures and quantization policies as data, and their batched tensor form.

:class:`Architecture` is one choice of depths, depthwise kernels, hidden channels and input
resolution in a :class:`~cimnas.space.spec.SearchSpace`; :class:`QuantPolicy` its per-block bit
widths; :class:`ArchBatch` a batch of both as tensors (one row per candidate), which the supernet,
the predictor encoding, the genome decode and the workload lowering all share.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch

from cimnas.space.spec import BIT_FIELDS, SearchSpace, SpaceError, _check_choice


# ---------------------------------------------------------------------- architectures


@dataclass
class Architecture:
    """One subnet: ``depths`` per stage, and per elastic block (all ``num_blocks`` of them,
    also those a shallower depth skips) its depthwise ``kernels`` and ``hidden`` channels."""

    depths: list[int]
    kernels: list[int]
    hidden: list[int]
    resolution: int

    def validate(self, space: SearchSpace) -> "Architecture":
        if len(self.depths) != space.num_stages:
            raise SpaceError(f"depths has {len(self.depths)} entries; the space has {space.num_stages} stages")
        for si, d in enumerate(self.depths):
            _check_choice(f"depths[{si}]", d, space.stage_depth_choices(si))
        for name in ("kernels", "hidden"):
            n = len(getattr(self, name))
            if n != space.num_blocks:
                raise SpaceError(f"{name} has {n} entries; the space has {space.num_blocks} blocks")
        for b, k in enumerate(self.kernels):
            _check_choice(f"kernels[{b}]", k, space.kernel_choices)
        for b, h in enumerate(self.hidden):
            _check_choice(f"hidden[{b}]", h, space.hidden_choices(b))
        _check_choice("resolution", self.resolution, space.resolution_choices)
        return self

    def active_blocks(self, space: SearchSpace) -> list[bool]:
        return [j < self.depths[s] for s, j in zip(space.block_stage, space.block_index_in_stage)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Architecture":
        _check_keys("architecture", data, cls)
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in data.items()})

    @classmethod
    def largest(cls, space: SearchSpace) -> "Architecture":
        return cls(
            depths=[max(space.stage_depth_choices(s)) for s in range(space.num_stages)],
            kernels=[max(space.kernel_choices)] * space.num_blocks,
            hidden=[space.max_hidden(b) for b in range(space.num_blocks)],
            resolution=max(space.resolution_choices),
        )

    @classmethod
    def smallest(cls, space: SearchSpace) -> "Architecture":
        return cls(
            depths=[min(space.stage_depth_choices(s)) for s in range(space.num_stages)],
            kernels=[min(space.kernel_choices)] * space.num_blocks,
            hidden=[min(space.hidden_choices(b)) for b in range(space.num_blocks)],
            resolution=min(space.resolution_choices),
        )

    @classmethod
    def median(cls, space: SearchSpace) -> "Architecture":
        """The middle choice on every axis (lower middle for an even number of choices)."""
        def mid(options: Sequence[Any]) -> Any:
            options = sorted(options)
            return options[(len(options) - 1) // 2]

        return cls(
            depths=[mid(space.stage_depth_choices(s)) for s in range(space.num_stages)],
            kernels=[mid(space.kernel_choices)] * space.num_blocks,
            hidden=[mid(space.hidden_choices(b)) for b in range(space.num_blocks)],
            resolution=mid(space.resolution_choices),
        )

    @classmethod
    def random(cls, space: SearchSpace, generator: torch.Generator | None = None) -> "Architecture":
        def pick(options: Sequence[Any]) -> Any:
            return options[int(torch.randint(len(options), (1,), generator=generator))]

        return cls(
            depths=[pick(space.stage_depth_choices(s)) for s in range(space.num_stages)],
            kernels=[pick(space.kernel_choices) for _ in range(space.num_blocks)],
            hidden=[pick(space.hidden_choices(b)) for b in range(space.num_blocks)],
            resolution=pick(space.resolution_choices),
        )


@dataclass
class QuantPolicy:
    """Per-block bit widths (one entry per elastic block): pointwise weights / activations and
    depthwise weights / activations. Fixed layers use ``SearchSpace.fixed_bits``."""

    pw_w_bits: list[int]
    pw_a_bits: list[int]
    dw_w_bits: list[int]
    dw_a_bits: list[int]

    def validate(self, space: SearchSpace) -> "QuantPolicy":
        for name in BIT_FIELDS:
            values = getattr(self, name)
            if len(values) != space.num_blocks:
                raise SpaceError(f"{name} has {len(values)} entries; the space has {space.num_blocks} blocks")
            for b, v in enumerate(values):
                _check_choice(f"{name}[{b}]", v, space.bit_choices)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantPolicy":
        _check_keys("quantization", data, cls)
        return cls(**{k: list(v) for k, v in data.items()})

    @classmethod
    def uniform(cls, space: SearchSpace, bits: int) -> "QuantPolicy":
        n = space.num_blocks
        return cls(*[[bits] * n for _ in BIT_FIELDS])

    @classmethod
    def random(cls, space: SearchSpace, generator: torch.Generator | None = None) -> "QuantPolicy":
        choices = torch.tensor(space.bit_choices)
        idx = torch.randint(len(choices), (len(BIT_FIELDS), space.num_blocks), generator=generator)
        return cls(*[choices[row].tolist() for row in idx])

    def block_bits(self, block: int) -> tuple[int, int, int, int]:
        return tuple(getattr(self, name)[block] for name in BIT_FIELDS)  # type: ignore[return-value]


def check_mapping_keys(what: str, data: Any, expected: Sequence[str], error: type[Exception] = SpaceError) -> None:
    """``data`` must be a mapping with exactly the keys ``expected``; else ``error`` naming
    ``what``, the missing and unknown keys and the expected ones."""
    if not isinstance(data, Mapping):
        raise error(f"{what} must be a mapping with keys {list(expected)}; got {type(data).__name__}")
    missing = [k for k in expected if k not in data]
    unknown = sorted(set(data) - set(expected))
    if missing or unknown:
        raise error(f"{what}: missing keys {missing}, unknown keys {unknown}; expected keys {list(expected)}")


def _check_keys(what: str, data: Any, cls: type) -> None:
    check_mapping_keys(what, data, [f.name for f in dataclasses.fields(cls)])


# ---------------------------------------------------------------------- batched form


@dataclass
class ArchBatch:
    """A batch of B (architecture, quantization) points as tensors on one device.

    ``depths [B, S]``, ``kernels [B, NB]``, ``hidden [B, NB]`` (channels), ``resolution [B]``,
    ``bits [B, NB, 4]`` in :data:`BIT_FIELDS` order; all ``torch.long``.
    """

    depths: torch.Tensor
    kernels: torch.Tensor
    hidden: torch.Tensor
    resolution: torch.Tensor
    bits: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.depths.shape[0])

    @property
    def device(self) -> torch.device:
        return self.depths.device

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        # not dataclasses.astuple: that deep-copies every tensor
        return (self.depths, self.kernels, self.hidden, self.resolution, self.bits)

    def to(self, device: torch.device | str) -> "ArchBatch":
        return ArchBatch(*(t.to(device) for t in self._tensors()))

    def __getitem__(self, index: Any) -> "ArchBatch":
        return ArchBatch(*(t[index] for t in self._tensors()))

    def active_blocks(self, space: SearchSpace) -> torch.Tensor:
        """``bool [B, NB]``: block b is active when its index in its stage < the stage depth."""
        stage = torch.tensor(space.block_stage, device=self.device)
        pos = torch.tensor(space.block_index_in_stage, device=self.device)
        return pos.unsqueeze(0) < self.depths[:, stage]

    @classmethod
    def from_designs(
        cls, space: SearchSpace, archs: Iterable[Architecture], policies: Iterable[QuantPolicy],
        device: torch.device | str = "cpu",
    ) -> "ArchBatch":
        archs, policies = list(archs), list(policies)
        if len(archs) != len(policies):
            raise SpaceError(f"{len(archs)} architectures but {len(policies)} quantization policies")
        for a, q in zip(archs, policies):
            a.validate(space)
            q.validate(space)
        t = lambda rows: torch.tensor(rows, dtype=torch.long, device=device)  # noqa: E731
        return cls(
            depths=t([a.depths for a in archs]),
            kernels=t([a.kernels for a in archs]),
            hidden=t([a.hidden for a in archs]),
            resolution=t([a.resolution for a in archs]),
            bits=t([[q.block_bits(b) for b in range(space.num_blocks)] for q in policies]),
        )

    def to_designs(self) -> list[tuple[Architecture, QuantPolicy]]:
        out = []
        for i in range(self.batch_size):
            bits = self.bits[i].tolist()
            arch = Architecture(
                depths=self.depths[i].tolist(), kernels=self.kernels[i].tolist(),
                hidden=self.hidden[i].tolist(), resolution=int(self.resolution[i]),
            )
            policy = QuantPolicy(*[[row[f] for row in bits] for f in range(len(BIT_FIELDS))])
            out.append((arch, policy))
        return out
