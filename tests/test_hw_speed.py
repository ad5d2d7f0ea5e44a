"""Tests of the cost model's speed paths: memoised hardware constants, chunking, the fused
(``torch.compile``) kernel. Each path must give the results of the plain computation."""

from __future__ import annotations

import os

import pytest
import torch

from cimnas.hw import HardwareBatch, HardwareSpace, evaluate
from cimnas.hw import constants as hw_constants
from cimnas.hw import cost_model
from cimnas.hw.components.cell import CELLS
from cimnas.hw.cost_model import _hardware_constants
from cimnas.search.lowering import evaluate_arch, workload_from_arch
from cimnas.space import Architecture, ArchBatch, QuantPolicy, apq_mbv2_tiny

REF = "configs/hw/reference.yaml"


def _reference_hw(n: int, seed: int) -> HardwareBatch:
    space = HardwareSpace.from_yaml(REF)
    return space.decode(space.random_indices(n, torch.Generator().manual_seed(seed)))


def _wild_hw(n: int, seed: int) -> HardwareBatch:
    """Every field varies: RRAM and SRAM cells, both ADC models, nodes between the anchors,
    off-grid array sizes, buffer depths and voltages."""
    g = torch.Generator().manual_seed(seed)

    def pick(values, dtype=None):
        t = torch.tensor(values, dtype=dtype)
        return t[torch.randint(len(values), (n,), generator=g)]

    names = list(CELLS)
    cells = torch.randint(len(names), (n,), generator=g)
    sram = torch.tensor([CELLS[names[i]].kind == "sram" for i in cells.tolist()])
    return HardwareBatch(
        voltage=(0.4 + 0.6 * torch.rand(n, generator=g)).float(),
        bits_per_cell=torch.where(sram, 1, torch.randint(1, 9, (n,), generator=g)),
        cycle_s=pick([1e-9, 2e-9, 3.3e-9], torch.float64),
        rows=pick([16, 32, 100, 128, 256, 700, 1024]), cols=pick([16, 32, 100, 128, 256, 700, 1024]),
        router_groups=torch.randint(1, 9, (n,), generator=g), tiles_per_group=torch.randint(1, 9, (n,), generator=g),
        macros_per_tile=pick([2, 4, 8, 48, 256]), glb_depth_words=pick([1000, 2048, 5000, 131072, 300000]),
        glb_width_bits=pick([512, 2048, 4096]), technology_nm=pick([7.0, 14.0, 22.0, 28.0, 32.0, 45.0, 65.0]),
        cell=cells, adc_bits=torch.randint(2, 11, (n,), generator=g), adc_model=torch.randint(2, (n,), generator=g),
        weight_memory=torch.randint(2, (n,), generator=g),
    )


def _flat(c: dict) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in c.items():
        if isinstance(v, dict):
            out.update({f"{k}.{k2}": v2 for k2, v2 in v.items()})
        else:
            out[k] = v
    return out


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.equal(torch.isfinite(a), torch.isfinite(b))
    fin = torch.isfinite(a)
    return float(((a - b).abs()[fin] / a.abs()[fin].clamp(min=1e-300)).max())


def test_memoised_hardware_constants_equal_the_plain_computation():
    hw_constants._MEMO.clear()
    for hw in (_reference_hw(300, seed=0), _wild_hw(400, seed=1), _reference_hw(1, seed=2)):
        memo = _flat(_hardware_constants(hw))
        plain = _flat(_hardware_constants(hw, memo=False))
        assert memo.keys() == plain.keys()
        for k in plain:
            assert memo[k].shape == plain[k].shape and memo[k].dtype == torch.float64, k
            # pow / exp2 may round differently in a CPU kernel's vector body and scalar tail
            assert _max_rel(plain[k], memo[k]) <= 1e-15, k
        # one design alone: the same constants
        one = _flat(_hardware_constants(hw[-1:], memo=False))
        for k in plain:
            assert _max_rel(one[k], memo[k][-1:]) <= 1e-15, k


def test_row_memo_of_small_batches_equals_the_group_memo():
    hw = _wild_hw(300, seed=7)
    hw_constants._ROW_MEMO.clear()
    grouped = hw_constants._memoised_constants(hw)
    for rows in (torch.arange(300), torch.tensor([5, 5, 0, 299, 5]), torch.arange(0, 300, 7), torch.arange(300)):
        by_row = hw_constants._row_memoised_constants(hw[rows])  # first: all new; later: seen rows
        assert by_row.keys() == grouped.keys()
        for k in grouped:
            assert by_row[k].dtype == torch.float64 and torch.equal(by_row[k], grouped[k][rows]), k
    assert len(hw_constants._ROW_MEMO[hw.device]) == 300
    # _hardware_constants takes the row memo up to _ROW_MEMO_MAX_BATCH designs, the group memo above
    limit = hw_constants._ROW_MEMO_MAX_BATCH
    try:
        hw_constants._ROW_MEMO_MAX_BATCH = 100
        large, small = _flat(_hardware_constants(hw)), _flat(_hardware_constants(hw[:100]))
    finally:
        hw_constants._ROW_MEMO_MAX_BATCH = limit
    for k in large:
        assert torch.equal(large[k][:100], small[k]), k


@pytest.mark.parametrize("space_name", ["apq_mbv2_tiny", "ofa_mbv3"])
def test_evaluate_arch_reuses_its_probe_across_calls_without_changing_results(space_name):
    """The one-row probe of evaluate_arch is built once per (space, value statistics): calls on
    other networks (other resolutions) score exactly as their materialised workloads."""
    from cimnas.space import get_space

    space = get_space(space_name)
    g = torch.Generator().manual_seed(11)
    stats = {"input_hist": torch.rand(len(workload_from_arch(space, _arch_batch(space, 1, g)).names), 31)}
    for value_stats in ("typical", stats):
        for call in range(3):
            ab = _arch_batch(space, 9, g)
            hw = _reference_hw(9, seed=20 + call)
            lazy = evaluate_arch(space, ab, hw, value_stats=value_stats, chunk_rows=4)
            whole = evaluate(workload_from_arch(space, ab, value_stats=value_stats), hw, chunk_rows=4)
            for name in ("energy_j", "latency_s", "area_mm2", "edap", "required_cells", "cycles", "reason"):
                assert torch.equal(getattr(lazy, name), getattr(whole, name)), (value_stats == "typical", call, name)
    one = evaluate_arch(space, ab[:1], hw[:1])  # B = 1 scores the probe itself: the real network
    assert torch.equal(one.energy_j, evaluate(workload_from_arch(space, ab[:1]), hw[:1]).energy_j)


def _arch_batch(space, n, g):
    return ArchBatch.from_designs(space, [Architecture.random(space, g) for _ in range(n)],
                                  [QuantPolicy.random(space, g) for _ in range(n)])


def test_memoised_constants_do_not_depend_on_what_was_evaluated_before():
    hw = _wild_hw(200, seed=3)
    hw_constants._MEMO.clear()
    fresh = _flat(_hardware_constants(hw))
    hw_constants._MEMO.clear()
    _hardware_constants(_wild_hw(333, seed=4))  # fills the memo from other batches first
    _hardware_constants(hw[::3])
    later = _flat(_hardware_constants(hw))
    for k in fresh:
        assert torch.equal(fresh[k], later[k]), k
    # a memo that overflows its limit is emptied and refilled with the same values
    limit = hw_constants._MEMO_LIMIT
    try:
        hw_constants._MEMO_LIMIT = 8
        small = _flat(_hardware_constants(hw))
    finally:
        hw_constants._MEMO_LIMIT = limit
    for k in fresh:
        assert torch.equal(fresh[k], small[k]), k


def test_compact_equals_torch_unique():
    g = torch.Generator().manual_seed(5)
    for span, n in ((7, 50), (1000, 30), (10**9, 200)):
        key = torch.randint(span, (n,), generator=g)
        u, inv = hw_constants._compact(key, span)
        u2, inv2 = torch.unique(key, return_inverse=True)
        assert torch.equal(u, u2) and torch.equal(inv, inv2)


# ---------------------------------------------------------------------- chunking


def test_default_chunks_scale_with_one_over_layers_and_do_not_change_results(monkeypatch):
    from cimnas.hw.cost_model import CPU_CHUNK_ELEMENTS, chunk_rows_for

    assert chunk_rows_for(68) == CPU_CHUNK_ELEMENTS // 68 and chunk_rows_for(17) == CPU_CHUNK_ELEMENTS // 17
    assert chunk_rows_for(10**7) == 1 and chunk_rows_for(68, "cuda") is None
    assert chunk_rows_for(68, compiled=True) > chunk_rows_for(68)
    from cimnas.search.problem import EVAL_CHUNK_ROWS

    assert chunk_rows_for(68, compiled=True) >= EVAL_CHUNK_ROWS  # a search piece is one fused call
    space = apq_mbv2_tiny()
    ab, hw = _designs(space, 300, seed=6)
    L = workload_from_arch(space, ab[:1]).num_layers
    monkeypatch.setattr(cost_model, "CPU_CHUNK_ELEMENTS", 70 * L)  # 70-row default chunks
    assert chunk_rows_for(L) == 70
    default = evaluate_arch(space, ab, hw)
    one = evaluate_arch(space, ab, hw, chunk_rows=300)
    for name in _COMPARED:
        assert torch.equal(getattr(default, name), getattr(one, name)), name


# ---------------------------------------------------------------------- fused kernel

_COMPARED = ("energy_j", "latency_s", "area_mm2", "edap", "required_cells", "available_cells", "cycles", "ops",
             "tops", "tops_per_w", "tops_per_w_layer_mean", "tops_per_w_layer_max", "tops_per_mm2_layer_mean",
             "tops_per_mm2_layer_max", "utilization", "utilization_layer_mean")


def _designs(space, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    pool = 8
    base = ArchBatch.from_designs(space, [Architecture.random(space, g) for _ in range(pool)],
                                  [QuantPolicy.random(space, g) for _ in range(pool)])
    return base[torch.randint(pool, (n,), generator=g)], _reference_hw(n, seed)


def _assert_close(eager, fused, rtol: float = 1e-6) -> float:
    assert torch.equal(eager.reason, fused.reason) and torch.equal(eager.feasible, fused.feasible)
    worst = 0.0
    for name in _COMPARED:
        worst = max(worst, _max_rel(getattr(eager, name), getattr(fused, name)))
    for k in eager.energy_by_component_j:
        a, b = eager.energy_by_component_j[k], fused.energy_by_component_j[k]
        assert torch.allclose(a, b, rtol=rtol, atol=0), k
    assert worst <= rtol, worst
    return worst


@pytest.mark.skipif(bool(os.environ.get("CIMNAS_SKIP_COMPILE")), reason="CIMNAS_SKIP_COMPILE is set")
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_compiled_cost_kernel_equals_eager(device):
    """Two small graphs (40 designs of the tiny space): 46-58 s cold on the loaded 2-core machine,
    ~15 s from the inductor cache; CIMNAS_SKIP_COMPILE=1 skips it."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    space = apq_mbv2_tiny()
    ab, hw = _designs(space, 40, seed=7)
    ab, hw = ab.to(device), hw.to(device)
    # lazily lowered rows (evaluate_arch), chunks of 16, 16 and 8 rows: one dynamic graph
    eager = evaluate_arch(space, ab, hw, chunk_rows=16)
    fused = evaluate_arch(space, ab, hw, chunk_rows=16, compile=True)
    _assert_close(eager, fused)
    # one network broadcast over the chips
    wl = workload_from_arch(space, ab[:1])
    _assert_close(evaluate(wl, hw, chunk_rows=16), evaluate(wl, hw, chunk_rows=16, compile=True))


# ---------------------------------------------------------------------- predictor in bf16


def test_bf16_hidden_layers_rank_the_shipped_records_like_fp32():
    from cimnas.models.predictor import AccuracyPredictor
    from cimnas.models.predictor.records import read_records, records_to_batch

    predictor = AccuracyPredictor.from_checkpoint("cimnas/artifacts/fmnist/predictor.pt")
    batch = records_to_batch(predictor.space, read_records("cimnas/artifacts/fmnist/predictor_records_quant.jsonl"),
                             quantized=True)
    fp32 = predictor.predict(batch).double()
    predictor.mlp.hidden_dtype = torch.bfloat16
    try:
        bf16 = predictor.predict(batch).double()
    finally:
        predictor.mlp.hidden_dtype = None
    assert not torch.equal(fp32, bf16)  # the opt-in really changes the arithmetic
    n = fp32.numel()
    tau = float((torch.sign(fp32[:, None] - fp32[None, :]) * torch.sign(bf16[:, None] - bf16[None, :])).sum()
                / (n * (n - 1)))
    top = lambda x: set(torch.topk(x, 100).indices.tolist())  # noqa: E731
    assert tau >= 0.999, tau  # measured 0.99944 on the 1,035 records
    assert len(top(fp32) & top(bf16)) >= 98  # measured 100
    assert float((fp32 - bf16).abs().max()) < 1e-3  # measured 3.3e-5 (accuracy fraction)


def test_compile_switch_auto_follows_the_break_even():
    from cimnas.hw.cost_compile import COMPILE_BREAK_EVEN_DESIGNS, resolve_compile

    assert resolve_compile(True, 0) and not resolve_compile(False, 10**9) and not resolve_compile(None, 10**9)
    assert resolve_compile("auto", COMPILE_BREAK_EVEN_DESIGNS)
    assert not resolve_compile("auto", 150 * 100)  # the default search stays eager (bit-identical to before)
    with pytest.raises(ValueError, match="allowed values"):
        resolve_compile("yes", 0)
