"""Tests of the batched CIM cost model (cimnas.hw): encoder vectors, component tables, area
records, invariants, batching, workloads and commands."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from cimnas.hw import (HardwareBatch, HardwareError, HardwareParams, HardwareSpace, Workload,
                       WorkloadError, evaluate)
from cimnas.models.workload_trace import workload_from_module
from cimnas.search.lowering import evaluate_arch, workload_from_arch
from cimnas.hw.components import adc, cell, drivers, router, sram
from cimnas.hw.histogram import average_slice_value, reference_lossy_histogram
from cimnas.experiments.reference_keys import ReferenceKeyError, parse_key
from cimnas.space import Architecture, ArchBatch, QuantPolicy, apq_mbv2, apq_mbv2_tiny, ofa_mbv3

REF = "configs/hw/reference.yaml"

# ---------------------------------------------------------------------- histogram encoder

MBV2_00_IN = [0.0025643070694059134, 0, 0, 0, 0.03720902279019356, 0, 0, 0, 0.2560918927192688, 0, 0, 0, 0,
              0.4255620241165161, 0, 0, 0, 0.22272932529449463, 0, 0, 0, 0, 0.044935163110494614, 0, 0, 0,
              0.010609322227537632, 0, 0, 0, 0.00029894770705141127]
MBV2_00_W = [0.002314814832061529, 0, 0, 0, 0.004629629664123058, 0, 0, 0, 0.039351850748062134, 0, 0, 0, 0,
             0.21759259700775146, 0, 0, 0, 0.6377314925193787, 0, 0, 0, 0, 0.08217592537403107, 0, 0, 0,
             0.013888888992369175, 0, 0, 0, 0.002314814832061529]
R18_05_IN = [0] * 15 + [0.304, 0.082, 0.0878, 0.0894, 0.0892, 0.0809, 0.0679, 0.0536, 0.0429, 0.0322, 0.0235,
                        0.017, 0.0121, 0.00793, 0.00539, 0.00426]
R18_05_W = [0.00282, 0.00321, 0.00413, 0.00535, 0.00706, 0.00953, 0.0122, 0.0166, 0.0213, 0.0294, 0.0404, 0.054,
            0.0714, 0.0876, 0.1, 0.105, 0.0968, 0.0817, 0.0672, 0.0476, 0.0361, 0.0276, 0.0188, 0.0148, 0.0107,
            0.00845, 0.00635, 0.00434, 0.00401, 0.00299, 0.00238]
# cim-cost-model.md §3.3: offset 8b/1 slice, 8b/2-bit slices, 8b/4-bit slices, 4b/1 slice, magnitude 8b
VECTORS = [
    ([1.0] * 15, (0.4667, 0.4667, 0.4667, 0.4667, 0.5333)),
    (MBV2_00_IN, (0.4132, 0.4471, 0.4771, 0.4047, 0.2744)),
    (MBV2_00_W, (0.5220, 0.4986, 0.5904, 0.5129, 0.1969)),
    (R18_05_IN, (0.5968, 0.5951, 0.6027, 0.5960, 0.2378)),
    (R18_05_W, (0.4788, 0.4942, 0.4880, 0.4776, 0.2419)),
]


@pytest.mark.parametrize("hist,expected", VECTORS)
def test_histogram_encoder_matches_spec_vectors(hist, expected):
    h = torch.tensor(hist)
    got = (average_slice_value(h, 8, 8), average_slice_value(h, 8, 2), average_slice_value(h, 8, 4),
           average_slice_value(h, 4, 4), average_slice_value(h, 8, 8, "magnitude"))
    for g, e in zip(got, expected):
        assert abs(float(g) - e) < 1e-3


def test_reference_lossy_histogram_has_eight_levels():
    h = reference_lossy_histogram(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
    assert torch.count_nonzero(h) <= 8 and abs(float(h.sum()) - 1) < 1e-6 and float(h[15]) == 0.0


# ---------------------------------------------------------------------- components vs tables


def t(*v, dtype=torch.float64):
    return torch.tensor(v, dtype=dtype)


def test_cell_and_row_driver_match_cimloop_tables():
    # cimloop-runs.md §4b: x̄ 0.5277 (8b default input hist), w̄ 0.4667, t 255
    x, wb = 0.527669, 0.466667
    e_hi, e_lo = cell.pulse_energies_pj(torch.tensor([0, 0]), t(128, 256), t(128, 256))
    e = cell.read_energy_pj(e_hi, e_lo, x, wb, 255.0)
    assert torch.allclose(e, t(0.940485, 0.936169), rtol=2e-3)
    row = drivers.row_read_energy_pj(drivers.off_energy_pj(t(32.0)),
                                     drivers.pulse_energy_pj(t(0.7, 0.8, 0.7), t(128, 128, 256), t(32.0, 32.0, 32.0)), x, 255.0)
    assert torch.allclose(row, t(5.58457, 7.24799, 10.7989), rtol=5e-3)
    # SRAM cells have no cell energy
    e_hi, _ = cell.pulse_energies_pj(torch.tensor([cell.CELL_NAMES.index("sram_example")]), t(128), t(128))
    assert float(e_hi) == 0.0


def test_adc_tables_and_survey_law():
    e = adc.neurosim_energy_pj(torch.tensor([8, 8, 8, 4]), t(0.7, 0.8, 0.7, 0.7), t(32.0, 32.0, 7.0, 32.0))
    assert torch.allclose(e, t(0.808223, 0.814431, 0.0946, 0.0479), rtol=1e-3)
    a = adc.neurosim_area_um2(torch.tensor([32, 128, 256]), torch.tensor([8, 8, 8]), t(32.0, 32.0, 22.0))
    assert torch.allclose(a, t(224043.0, 895667.0, 846685.0), rtol=1e-6)
    rate = t(128 / 1e-9 / 16)
    assert abs(float(adc.survey_energy_pj(torch.tensor([8]), t(32.0), rate)) / 6.482 - 1) < 5e-3
    assert abs(float(adc.survey_area_um2(torch.tensor([8]), t(32.0), rate)) / 207125 - 1) < 5e-3


def test_buffers_and_router_match_tables():
    r, w, a = sram.glb(t(2048, 16384, 131072), t(2048, 2048, 2048), t(32.0, 32.0, 32.0))
    assert torch.allclose(r, t(323.7, 1778.45, 6750.7)) and torch.allclose(w, t(858.2, 2210.63, 7617.8))
    assert torch.allclose(a, t(0.8632, 10.7364, 70.2289))
    r7, _, a7 = sram.glb(t(4096), t(2048), t(7.0))
    assert torch.allclose(r7, t(196.1)) and torch.allclose(a7, t(0.434))
    r, w, a = sram.tile_buffer(t(128, 512, 1024), t(128, 512, 32), t(32.0, 32.0, 32.0))
    assert torch.allclose(r, t(2.073, 22.45, 34.69)) and torch.allclose(w, t(4.072, 55.58, 39.13))
    assert torch.allclose(a, t(0.00425015, 0.05844, 0.0305))
    assert abs(float(router.transfer_energy_pj(t(32.0))) - 10.37) < 1e-9
    assert abs(float(router.area_um2(t(32.0))) - 18750.0) < 1e-9


def test_node_and_voltage_monotonicity():
    nodes = t(7.0, 14.0, 22.0, 32.0, 45.0, 65.0)
    for values in (adc.neurosim_energy_pj(torch.full((6,), 8), torch.full((6,), 0.7, dtype=torch.float64), nodes),
                   sram.glb(torch.full((6,), 8192.0), torch.full((6,), 2048.0), nodes)[0],
                   sram.glb(torch.full((6,), 8192.0), torch.full((6,), 2048.0), nodes)[2],
                   sram.tile_buffer(torch.full((6,), 256.0), torch.full((6,), 128.0), nodes)[2],
                   cell.area_um2(torch.zeros(6, dtype=torch.long), nodes),
                   router.area_um2(nodes), drivers.row_area_um2(torch.full((6,), 128.0), nodes)):
        assert bool((values[1:] >= values[:-1]).all()), values
    volts = t(0.5, 0.6, 0.7, 0.8, 0.85)
    pulse = drivers.pulse_energy_pj(volts, torch.full((5,), 128.0), torch.full((5,), 32.0))
    assert bool((pulse[1:] > pulse[:-1]).all())
    # whole model: voltage raises energy and leaves latency and area alone
    wl = _small_workload()
    res = evaluate(wl, HardwareBatch.from_params([HardwareParams(voltage=v) for v in (0.5, 0.65, 0.85)]))
    assert bool((res.energy_j[1:] > res.energy_j[:-1]).all())
    assert torch.equal(res.latency_s, res.latency_s[:1].expand(3)) and torch.equal(res.area_mm2, res.area_mm2[:1].expand(3))
    res = evaluate(wl, HardwareBatch.from_params([HardwareParams(technology_nm=n) for n in (7, 22, 32, 65)]))
    assert bool((res.area_mm2[1:] > res.area_mm2[:-1]).all())


# ---------------------------------------------------------------------- area records (§8.1)

AREA_RECORDS = [
    ((0.8, 8, 1e-9, 256, 32, 1, 32, 64, 2048), 464.31),
    ((0.8, 8, 1e-9, 256, 32, 2, 32, 32, 8192), 467.94),
    ((0.5, 3, 1e-9, 512, 32, 2, 8, 64, 2048), 234.43),
    ((0.65, 6, 2e-9, 32, 128, 16, 4, 128, 131072), 7420.41),
    ((0.85, 1, 8e-9, 512, 32, 2, 64, 64, 8192), 1872.98),
    ((0.55, 5, 6e-9, 128, 256, 2, 8, 64, 4096), 1841.23),
    ((0.85, 8, 10e-9, 64, 64, 8, 8, 16, 65536), 434.62),
    ((0.8, 5, 10e-9, 128, 32, 32, 8, 8, 32768), 479.24),
]


def _hw(tup, **kw):
    names = ("voltage", "bits_per_cell", "cycle_s", "rows", "cols", "router_groups", "tiles_per_group",
             "macros_per_tile", "glb_depth_words")
    return HardwareParams(**dict(zip(names, tup)), **kw)


def test_area_of_reference_records_within_half_percent():
    hw = HardwareBatch.from_params([_hw(h) for h, _ in AREA_RECORDS])
    res = evaluate(_small_workload(), hw)
    expected = torch.tensor([a for _, a in AREA_RECORDS], dtype=torch.float64)
    assert float(((res.area_mm2 - expected).abs() / expected).max()) < 5e-3
    parts = sum(res.area_by_component_mm2.values())
    assert torch.allclose(parts, res.area_mm2)


# ---------------------------------------------------------------------- invariants


def _small_workload(n_layers: int = 3) -> Workload:
    layers = [
        dict(kind="conv", C=3, M=16, R=3, S=3, P=14, Q=14, stride=2),
        dict(kind="depthwise", C=1, M=1, R=3, S=3, P=14, Q=14, G=16),
        dict(kind="pointwise", C=16, M=24, P=14, Q=14, input_bits=4, weight_bits=6),
        dict(kind="linear", C=24, M=10),
    ]
    return Workload.from_layers(layers[:n_layers + 1] if n_layers >= 3 else layers[:n_layers])


def _random_hw(n: int, seed: int = 0) -> HardwareBatch:
    space = HardwareSpace.from_yaml(REF)
    return space.decode(space.random_indices(n, torch.Generator().manual_seed(seed)))


def test_energy_is_sum_of_nonnegative_parts_and_metrics_consistent():
    res = evaluate(_small_workload(), _random_hw(64))
    parts = torch.stack(list(res.energy_by_component_j.values()))
    assert bool((parts >= 0).all())
    ok = res.feasible
    assert torch.allclose(parts.sum(0)[ok], res.energy_j[ok])
    assert torch.allclose(res.edap[ok], (res.energy_j * res.latency_s * res.area_mm2)[ok])
    assert torch.allclose(res.tops_per_w[ok], (res.ops / res.energy_j / 1e12)[ok])
    assert bool((res.tops_per_w_layer_max[ok] >= res.tops_per_w_layer_mean[ok] * (1 - 1e-6)).all())
    assert bool(((res.utilization[ok] > 0) & (res.utilization[ok] <= 1)).all())


def test_doubling_a_layer_doubles_its_energy_and_latency():
    one = Workload.from_layers([dict(kind="pointwise", C=32, M=64, P=28, Q=28)])
    two = Workload.from_layers([dict(kind="pointwise", C=32, M=64, P=28, Q=28)] * 2)
    hw = _random_hw(32, seed=1)
    r1, r2 = evaluate(one, hw), evaluate(two, hw)
    ok = r1.feasible
    assert torch.allclose(r2.energy_j[ok], 2 * r1.energy_j[ok], rtol=1e-5)
    assert torch.allclose(r2.latency_s[ok], 2 * r1.latency_s[ok], rtol=1e-9)


def test_more_macros_never_increases_latency():
    wl = _small_workload()
    base = _random_hw(48, seed=2)
    for field in ("macros_per_tile", "tiles_per_group", "router_groups"):
        more = HardwareBatch(**{f: getattr(base, f) for f in base.__dataclass_fields__})
        setattr(more, field, getattr(base, field) * 2)
        r0, r1 = evaluate(wl, base), evaluate(wl, more)
        ok = r0.feasible
        assert bool((r1.latency_s[ok] <= r0.latency_s[ok]).all()), field
        assert bool((r1.area_mm2 > r0.area_mm2).all())


def test_batched_equals_per_design():
    wl = _small_workload()
    hw = _random_hw(16, seed=3)
    batched = evaluate(wl, hw)
    for i in range(16):
        single = evaluate(wl, hw[i])
        for name in ("energy_j", "latency_s", "area_mm2", "tops_per_w_layer_mean", "utilization"):
            a, b = getattr(batched, name)[i], getattr(single, name)[0]
            assert (math.isinf(a) and math.isinf(b)) or abs(float(a) - float(b)) <= 1e-6 * abs(float(b)), name
        assert bool(batched.feasible[i]) == bool(single.feasible[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_equals_cuda():
    wl, hw = _small_workload(), _random_hw(64, seed=4)
    cpu = evaluate(wl, hw)
    gpu = evaluate(wl.to("cuda"), hw.to("cuda"))
    ok = cpu.feasible
    assert torch.equal(cpu.feasible, gpu.feasible.cpu())
    assert torch.allclose(cpu.energy_j[ok], gpu.energy_j.cpu()[ok], rtol=1e-5)
    assert torch.allclose(cpu.latency_s[ok], gpu.latency_s.cpu()[ok])


def test_feasibility_reasons_and_reference_compat():
    big = Workload.from_layers([dict(kind="pointwise", C=1280, M=1000, P=1, Q=1)])
    tiny = HardwareParams(rows=32, cols=32, router_groups=1, tiles_per_group=4, macros_per_tile=4)
    res = evaluate(big, HardwareBatch.from_params([tiny]))
    assert not bool(res.feasible[0]) and res.reason_names[0] == "layer-exceeds-chip"
    assert math.isinf(float(res.energy_j[0]))
    # depthwise layers: the reference's capacity check ignores G
    dw = Workload.from_layers([dict(kind="depthwise", C=1, M=1, R=3, S=3, P=7, Q=7, G=960)])
    hw = HardwareBatch.from_params([HardwareParams()])
    assert float(evaluate(dw, hw).required_cells[0]) == 960 * 9
    assert float(evaluate(dw, hw, reference_compat=True).required_cells[0]) == 9
    # bit swap: 4-bit inputs / 8-bit weights cost differently once swapped
    pw = Workload.from_layers([dict(kind="pointwise", C=64, M=64, P=14, Q=14, input_bits=4, weight_bits=8)])
    assert float(evaluate(pw, hw).energy_j[0]) < float(evaluate(pw, hw, reference_compat=True).energy_j[0])


# ---------------------------------------------------------------------- parameters


def test_hardware_space_sizes_round_trip_and_errors():
    ref = HardwareSpace.from_yaml(REF)
    assert ref.size() == 9_676_800
    assert HardwareSpace.from_yaml("configs/hw/paper.yaml").size() == 14_112_000
    idx = ref.random_indices(20, torch.Generator().manual_seed(5))
    batch = ref.decode(idx)
    assert torch.equal(ref.encode(batch.to_params()), idx)
    assert HardwareBatch.from_params(batch.to_params()).to_params() == batch.to_params()
    sram_space = HardwareSpace.from_yaml("configs/hw/sram_7nm.yaml")
    res = evaluate(_small_workload(), sram_space.decode(sram_space.random_indices(8, torch.Generator().manual_seed(6))))
    assert bool((res.area_mm2 > 0).all())
    with pytest.raises(HardwareError, match="cell='dram'.*allowed values"):
        HardwareParams(cell="dram")
    with pytest.raises(HardwareError, match="rows"):
        HardwareSpace.from_dict({"genes": {"rows": [32, 0.5]}})
    with pytest.raises(HardwareError, match="gene 'lanes'"):
        HardwareSpace.from_dict({"genes": {"lanes": [1]}})


# ---------------------------------------------------------------------- workloads


def test_workload_json_round_trip_expand_and_errors():
    wl = _small_workload()
    back = Workload.from_dict(json.loads(json.dumps(wl.to_dict())))
    assert back.layer_dicts() == wl.layer_dicts()
    assert torch.allclose(back.input_hist, wl.input_hist) if wl.input_hist is not None else back.input_hist is None
    big = wl.expand(5)
    assert big.batch_size == 5 and big[3].layer_dicts() == wl.layer_dicts()
    with pytest.raises(WorkloadError, match="kind='pool'"):
        Workload.from_layers([dict(kind="pool", C=1, M=1)])


@pytest.mark.parametrize("space", [apq_mbv2(), ofa_mbv3(), apq_mbv2_tiny()], ids=lambda s: s.name)
def test_workload_from_arch_matches_per_design_construction(space):
    g = torch.Generator().manual_seed(7)
    archs = [Architecture.random(space, g) for _ in range(6)]
    pols = [QuantPolicy.random(space, g) for _ in range(6)]
    batch = workload_from_arch(space, ArchBatch.from_designs(space, archs, pols))
    for i in range(6):
        single = workload_from_arch(space, ArchBatch.from_designs(space, [archs[i]], [pols[i]]))
        assert batch[i].layer_dicts() == single.layer_dicts()
        n_active = sum(archs[i].active_blocks(space))
        se = sum(1 for b, a in enumerate(archs[i].active_blocks(space)) if a and space.stages[space.block_stage[b]].se)
        fixed = 5 + (space.final_expand_channels is not None)
        assert len(single.layer_dicts()) == fixed + 3 * n_active + 2 * se


TINY_MBV3 = ofa_mbv3(width_mult=0.25, channel_step=2, stem_stride=1, in_channels=1, num_classes=10,
                     resolution_choices=(32,))


def _tiny_resnet():
    from cimnas.space import ofa_resnet50

    return ofa_resnet50(width_mult=0.25, in_channels=1, num_classes=10, resolution_choices=(32,))


@pytest.mark.parametrize("space", [apq_mbv2_tiny(), TINY_MBV3, _tiny_resnet()],
                         ids=["apq_mbv2_tiny", "ofa_mbv3_tiny", "ofa_resnet50_tiny"])
def test_workload_from_arch_matches_exported_subnet(space):
    """Slot order contract: the supernet's exported module runs the same layers (SE included)."""
    from cimnas.models.supernet import OFASupernet

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(8)
    arch, pol = Architecture.random(space, g), QuantPolicy.random(space, g)
    sub = OFASupernet(space).export_subnet(arch, pol)
    res_px = space.resolution_choices[0]
    from_module = workload_from_module(sub, torch.rand(1, 1, res_px, res_px))
    from_arch = workload_from_arch(space, ArchBatch.from_designs(space, [arch], [pol]))
    assert from_module.layer_dicts() == from_arch.layer_dicts()
    assert from_module.input_hist is not None and torch.allclose(from_module.input_hist.sum(-1), torch.ones(1, from_module.num_layers))
    res = evaluate(from_module, HardwareBatch.from_params([HardwareParams()]))
    assert bool(res.feasible[0]) and float(res.energy_j[0]) > 0


def test_workload_from_plain_module_falls_back_to_minmax():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3))
    wl = workload_from_module(net, torch.rand(2, 1, 8, 8), default_bits=6)
    assert [d["kind"] for d in wl.layer_dicts()] == ["conv", "linear"]
    assert wl.layer_dicts()[0]["input_bits"] == 6 and wl.layer_dicts()[1]["C"] == 256


# ---------------------------------------------------------------------- reference keys / commands

KEY = ("A_0.85_8_1e-08_64_64_8_8_16_65536_223434_553573753575375333573_468666866464646466464_"
       "846888888668444866668_444448644846868688466_488886484866686446444_3_0_1_4_4_2_1_5_2_13_13_10_2_20_7_22_8_9_5_12_18")


def test_reference_key_matches_recorded_area_and_latency():
    from cimnas.experiments.hw_evaluate import score_keys

    rec = score_keys([KEY], compat=True)[0]
    # recorded: e 1.0426e-3 J, a 4.34619 cm², l 2.676e-5 s, a_tpm 0.509, u 0.6836
    assert abs(rec["area_mm2"] / 434.618522 - 1) < 5e-3
    assert abs(rec["latency_s"] / 2.676e-5 - 1) < 0.15
    assert abs(rec["energy_j"] / 1.0425746e-3 - 1) < 0.30
    assert abs(rec["utilization"] - 0.6836) < 0.02
    with pytest.raises(ReferenceKeyError, match="fields"):
        parse_key("A_0.85_8")
    with pytest.raises(ReferenceKeyError, match="ks"):
        parse_key(KEY.replace("_553573753575375333573_", "_55357375357537533357_"))


def test_evaluate_command_prints_json_per_design(tmp_path):
    design = {"hardware": HardwareParams().to_dict(), "space": "apq_mbv2",
              "architecture": Architecture.largest(apq_mbv2()).to_dict(),
              "quantization": QuantPolicy.uniform(apq_mbv2(), 8).to_dict()}
    path = tmp_path / "d.json"
    path.write_text(json.dumps([design, {"hardware": HardwareParams().to_dict(),
                                         "workload": {"layers": [dict(kind="linear", C=64, M=10)]}}]))
    out = subprocess.run([sys.executable, "-m", "cimnas.experiments.hw_evaluate", str(path), "--key", KEY],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()
    recs = [json.loads(line) for line in out]
    assert len(recs) == 3
    for r in recs:
        assert {"energy_j", "latency_s", "area_mm2", "edap", "feasible"} <= set(r)
    bad = subprocess.run([sys.executable, "-m", "cimnas.experiments.hw_evaluate", "--key", "A_1_2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected 37" in bad.stderr


def test_chunking_threads_and_per_row_workloads_do_not_change_results():
    space = apq_mbv2_tiny()
    g = torch.Generator().manual_seed(9)
    ab = ArchBatch.from_designs(space, [Architecture.random(space, g) for _ in range(5)],
                                [QuantPolicy.random(space, g) for _ in range(5)])
    idx = torch.randint(5, (37,), generator=g)
    wl = workload_from_arch(space, ab[idx])
    hw = _random_hw(37, seed=10)
    whole = evaluate(wl, hw, chunk_rows=1000, per_layer=True)
    chunked = evaluate(wl, hw, chunk_rows=6, num_threads=2)
    for name in ("energy_j", "latency_s", "area_mm2", "tops_per_w_layer_mean", "tops_per_mm2_layer_max",
                 "utilization", "required_cells"):
        a, b = getattr(whole, name), getattr(chunked, name)
        fin = torch.isfinite(a)
        assert torch.equal(fin, torch.isfinite(b)) and torch.allclose(a[fin], b[fin], rtol=1e-6), name
    assert torch.equal(whole.reason, chunked.reason)
    lazy = evaluate_arch(space, ab[idx], hw, chunk_rows=6)
    fin = torch.isfinite(whole.energy_j)
    assert torch.allclose(lazy.energy_j[fin], whole.energy_j[fin], rtol=1e-6) and torch.equal(lazy.reason, whole.reason)
    # a per-row workload equals the same network broadcast from one row
    one = workload_from_arch(space, ab[idx[:1]])
    bcast = evaluate(one, hw)
    rows = evaluate(workload_from_arch(space, ab[idx[:1].expand(37)]), hw)
    ok = bcast.feasible
    assert torch.allclose(bcast.energy_j[ok], rows.energy_j[ok], rtol=1e-6)
    # per-layer energies add up to the totals
    ok = whole.feasible
    assert torch.allclose(whole.layers["energy_j"].double().sum(1)[ok], whole.energy_j[ok], rtol=1e-4)
    assert torch.allclose(whole.layers["cycles"].double().sum(1)[ok], whole.cycles[ok])


def test_from_results_rescoring_of_reference_records():
    """10 records of CIMNAS's shipped example results (resCIMNAS/.../Constrtest0.json), re-scored
    with the reference quirks and typical histograms (the per-candidate ones are not shipped)."""
    from cimnas.experiments.hw_evaluate import from_results

    recs, summary = from_results("tests/data/cimnas_reference_results_subset.json", compat=True)
    assert summary["compared"] == 10 and all(r["feasible"] for r in recs)
    assert summary["area_max_rel_err"] < 5e-3
    assert summary["latency_median_rel_err"] < 0.02 and summary["latency_max_rel_err"] < 0.15
    assert summary["energy_median_rel_err"] < 0.20 and summary["energy_max_rel_err"] < 0.30
    assert summary["tops_per_mm2_layer_mean_median_rel_err"] < 0.05


def test_readable_mapping_matches_the_inlined_one():
    """mapping.map_layers (the documented reference form) == evaluate's inlined mapping."""
    from cimnas.hw.mapping import map_layers

    wl = _small_workload()
    hw = _random_hw(40, seed=11)
    res = evaluate(wl, hw, per_layer=True)
    f = lambda name: getattr(wl, name).float()  # noqa: E731
    col = lambda name: getattr(hw, name).float().unsqueeze(1)  # noqa: E731
    mp = map_layers(C=f("C"), M=f("M"), R=f("R"), S=f("S"), P=f("P"), Q=f("Q"), G=f("G"), N=f("N"),
                    weight_bits=f("weight_bits"), bits_per_cell=col("bits_per_cell"), rows=col("rows"),
                    cols=col("cols"), macros_per_tile=col("macros_per_tile"),
                    tiles_per_group=col("tiles_per_group"), router_groups=col("router_groups"))
    assert torch.equal(mp.cycles, res.layers["cycles"])
    assert torch.equal(mp.fits, res.layers["fits"])
    assert torch.equal(mp.copies.expand_as(res.layers["copies"]), res.layers["copies"])


def test_per_row_histograms_and_explicit_averages():
    layers = [dict(kind="pointwise", C=32, M=32, P=14, Q=14), dict(kind="depthwise", C=1, M=1, R=3, S=3, P=14, Q=14, G=32)]
    rows = []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        hist = [dict(layer, input_hist=torch.rand(31, generator=g).tolist(), weight_hist=torch.rand(31, generator=g).tolist())
                for layer in layers]
        rows.append(Workload.from_layers(hist))
    stacked = Workload(**{f: (torch.cat([getattr(r, f) for r in rows]) if isinstance(getattr(rows[0], f), torch.Tensor) else None)
                          for f in Workload.__dataclass_fields__})
    hw = _random_hw(3, seed=12)
    together = evaluate(stacked, hw, chunk_rows=2)
    for i in range(3):
        alone = evaluate(rows[i], hw[i])
        assert abs(float(together.energy_j[i]) / float(alone.energy_j[0]) - 1) < 1e-5
    # explicit slice averages override the histograms
    fixed = Workload.from_layers([dict(layers[0], average_input_value=0.0, average_weight_value=0.5)])
    res = evaluate(fixed, HardwareBatch.from_params([HardwareParams()]))
    assert float(res.energy_by_component_j["cim_unit"][0]) == 0.0


def test_package_evaluate_stays_callable_after_importing_the_command_module():
    """Importing the evaluation command must leave ``cimnas.hw.evaluate`` the cost-model function
    (regression: the command module once shadowed it and the search saw "'module' object is not
    callable")."""
    import cimnas.hw as hw
    from cimnas.experiments.hw_evaluate import main  # noqa: F401
    from cimnas.hw.cost_model import evaluate as cost_evaluate
    from cimnas.space import Architecture, ArchBatch, QuantPolicy, apq_mbv2_tiny

    space = apq_mbv2_tiny()
    arch = ArchBatch.from_designs(space, [Architecture.largest(space)], [QuantPolicy.uniform(space, 8)])
    hardware = HardwareBatch.from_params([HardwareParams()])
    workload = workload_from_arch(space, arch)
    assert callable(hw.evaluate)
    via_package = hw.evaluate(workload, hardware)
    direct = cost_evaluate(workload, hardware)
    assert torch.equal(via_package.energy_j, direct.energy_j)
