"""Once-for-All checkpoints imported into cimnas, proven against the original ``ofa`` package.

Every OFA network is built by ``ofa`` itself with seeded random weights; its BN affine
parameters and running statistics and its kernel-transformation matrices are randomised so that
each of them changes the logits. Subnets are compared in eval mode on a fixed input (batch 2,
40-64 px: the networks are fully convolutional, so a small input exercises every layer).
"""

from __future__ import annotations

import random

import pytest
import torch

ofa_nets = pytest.importorskip("ofa.imagenet_classification.elastic_nn.networks")

from cimnas.models.ofa_config import (OFAConfig, OFAImportError, arch_from_ofa, arch_to_ofa,  # noqa: E402
                                      config_of_space, ofa_space)
from cimnas.models.ofa_import import export_ofa, import_ofa, main  # noqa: E402
from cimnas.models.supernet import OFASupernet, load_supernet  # noqa: E402
from cimnas.space import Architecture, get_space  # noqa: E402

TOL = 1e-4
RESOLUTIONS = (40, 48, 56, 64)
STATIC_SUBNETS = 6  # of the random subnets, also compared as static networks

#: (case id, family, ofa class name, constructor kwargs, cimnas space expected, subnets compared)
CASES = {
    "proxyless_w1.0": ("proxyless", "OFAProxylessNASNets",
                       dict(width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[4, 6], depth_list=[2, 3, 4]),
                       "ofa_proxyless_w1.0", 20),
    "proxyless_w1.3": ("proxyless", "OFAProxylessNASNets",
                       dict(width_mult=1.3, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]),
                       "ofa_proxyless_w1.3", 5),
    "mbv3_w1.0": ("mbv3", "OFAMobileNetV3",
                  dict(width_mult=1.0, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]),
                  "ofa_mbv3", 20),
    "mbv3_w1.2": ("mbv3", "OFAMobileNetV3",
                  dict(width_mult=1.2, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4]),
                  "ofa_mbv3_w1.2", 5),
    "resnet50": ("resnet50", "OFAResNets",
                 dict(depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35], width_mult_list=[0.65, 0.8, 1.0]),
                 "ofa_resnet50_w1.0", 20),
}
N_CLASSES = 100


def _randomise(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("_matrix"):  # kernel transforms: identity at init -> make them matter
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            if isinstance(m, torch.nn.Linear):  # logits of order 1..10, so 1e-4 is a strict bound
                m.weight.mul_(20.0)


def _ofa_net(case: str, n_classes: int = N_CLASSES) -> torch.nn.Module:
    _, cls_name, kwargs, _, _ = CASES[case]
    torch.manual_seed(0)
    net = getattr(ofa_nets, cls_name)(n_classes=n_classes, **kwargs)
    _randomise(net, seed=1)
    return net.eval()


@pytest.fixture(scope="module", params=list(CASES))
def imported(request, tmp_path_factory):
    case = request.param
    family, _, kwargs, _, _ = CASES[case]
    net = _ofa_net(case)
    path = tmp_path_factory.mktemp(case) / "ofa.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    out = path.with_name("supernet.pt")
    model = import_ofa(path, family, out, width_mult=kwargs.get("width_mult", 1.0),
                       expand=kwargs["expand_ratio_list"], depth=kwargs["depth_list"])
    return case, net, model.eval(), path, out


def _random_subnet(space, case: str, rng: random.Random):
    family, _, kwargs, _, _ = CASES[case]
    nb, ns = space.num_blocks, space.num_stages
    e = [rng.choice(kwargs["expand_ratio_list"]) for _ in range(nb)]
    if family == "resnet50":
        d = [max(kwargs["depth_list"])] + [rng.choice(kwargs["depth_list"]) for _ in range(ns)]
        ofa_args = {"d": d, "e": e, "w": [2] * (ns + 2)}
        arch = arch_from_ofa(space, 3, e, d)
    else:
        ks = [rng.choice(kwargs["ks_list"]) for _ in range(nb)]
        d = [rng.choice(kwargs["depth_list"]) for _ in range(ns)]
        ofa_args = {"ks": ks, "e": e, "d": d}
        arch = arch_from_ofa(space, ks, e, d)
    return ofa_args, arch


def test_import_picks_the_matching_space_and_writes_a_loadable_supernet(imported):
    case, net, model, _, out = imported
    assert model.space.name == CASES[case][3]
    assert model.space.num_classes == N_CLASSES
    n_ofa = sum(p.numel() for p in net.parameters())
    ours = sum(p.numel() for n, p in model.named_parameters() if ".input_quantizer." not in n)
    assert ours == n_ofa  # every OFA tensor, nothing more (the quantizer ranges are cimnas-only)
    loaded = load_supernet(out)
    assert loaded.space == model.space
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())


def test_subnet_logits_and_exported_subnets_equal_ofa(imported):
    """>= 20 random subnets per family (depth, kernel, expand, input resolution): cimnas after
    import == ofa after set_active_subnet; for the first few, cimnas export_subnet == ofa
    get_active_subnet (same parameter count, same logits)."""
    case, net, model, _, _ = imported
    n_subnets = CASES[case][4]
    rng = random.Random(7)
    g = torch.Generator().manual_seed(3)
    worst, outputs = 0.0, []
    with torch.no_grad():
        for i in range(n_subnets):
            ofa_args, arch = _random_subnet(model.space, case, rng)
            res = rng.choice(RESOLUTIONS)
            x = torch.randn(2, 3, res, res, generator=g)
            net.set_active_subnet(**ofa_args)
            model.set_active(arch)
            ref = net(x)
            worst = max(worst, float((model(x) - ref).abs().max()))
            if res == RESOLUTIONS[-1]:
                outputs.append(ref)
            if i >= STATIC_SUBNETS:  # building static copies dominates the run time
                continue
            ofa_static = net.get_active_subnet(preserve_weight=True).eval()
            ours_static = model.export_subnet().eval()
            assert sum(p.numel() for p in ofa_static.parameters()) == sum(
                p.numel() for n, p in ours_static.named_parameters() if ".input_quantizer." not in n)
            worst = max(worst, float((ours_static(x) - ofa_static(x)).abs().max()))
    assert worst <= TOL, f"{case}: max |logit difference| {worst:.3g} > {TOL}"
    # the subnets really differ from each other, so the comparison above can fail
    assert len(outputs) >= 2 and float((outputs[0] - outputs[1]).abs().max()) > 1e-2
    assert float(outputs[0].abs().max()) > 1.0


def test_export_back_round_trips_bit_for_bit_and_loads_strict(imported, tmp_path):
    case, net, model, _, _ = imported
    _, cls_name, kwargs, _, _ = CASES[case]
    original = net.state_dict()
    path, config = export_ofa(model, tmp_path / "back.pth")
    back = torch.load(path, weights_only=True)["state_dict"]
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) and back[k].dtype == original[k].dtype for k in original)
    fresh = getattr(ofa_nets, cls_name)(**config.constructor_kwargs())
    torch.nn.Module.load_state_dict(fresh, back, strict=True)  # torch's own strict check
    fresh.load_state_dict(back, strict=True)  # ofa's loader (key renaming, then strict)
    again = import_ofa(path, CASES[case][0], width_mult=kwargs.get("width_mult", 1.0),
                       expand=kwargs["expand_ratio_list"], depth=kwargs["depth_list"])
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in again.state_dict().items())


def test_arch_conversion_round_trips(imported):
    case, _, model, _, _ = imported
    rng = random.Random(11)
    for _ in range(5):
        ofa_args, arch = _random_subnet(model.space, case, rng)
        back = arch_to_ofa(model.space, arch)
        assert back["e"] == ofa_args["e"]
        if "ks" in back:
            assert back["ks"] == ofa_args["ks"]
            assert back["d"] == [min(d, s.max_depth) for d, s in zip(ofa_args["d"], model.space.stages)]
        else:
            assert back["d"] == ofa_args["d"]


# ---------------------------------------------------------------------- bad checkpoints


@pytest.fixture(scope="module")
def mbv3_state():
    return _ofa_net("mbv3_w1.0").state_dict()


def _expect_error(tmp_path, state, family="mbv3", **kwargs) -> str:
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    out = tmp_path / "out" / "supernet.pt"
    with pytest.raises(OFAImportError) as err:
        import_ofa(path, family, out, **kwargs)
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())
    return str(err.value)


def test_wrong_shape_names_tensor_expected_and_found(tmp_path, mbv3_state):
    state = dict(mbv3_state)
    key = "blocks.3.conv.depth_conv.conv.7to5_matrix"
    state[key] = torch.zeros(9, 9)
    msg = _expect_error(tmp_path, {"state_dict": state})
    assert key in msg and "expected shape [25, 25]" in msg and "found [9, 9]" in msg


def test_missing_and_unknown_tensors_are_named(tmp_path, mbv3_state):
    state = dict(mbv3_state)
    del state["blocks.5.conv.depth_conv.se.fc.reduce.bias"]
    state["blocks.5.conv.depth_conv.extra.weight"] = torch.zeros(3)
    msg = _expect_error(tmp_path, state)
    assert "missing tensors" in msg and "blocks.5.conv.depth_conv.se.fc.reduce.bias" in msg
    assert "unknown tensors" in msg and "blocks.5.conv.depth_conv.extra.weight" in msg


def test_mismatched_family_or_options_fail(tmp_path, mbv3_state):
    msg = _expect_error(tmp_path, mbv3_state, family="proxyless", width_mult=1.0, expand=[4, 6])
    assert "OFAProxylessNASNets" in msg and "expected shape" in msg
    msg = _expect_error(tmp_path, mbv3_state, family="mbv3", width_mult=1.2)
    assert "first_conv.conv.weight" in msg and "expected shape [24, 3, 3, 3]" in msg and "found [16, 3, 3, 3]" in msg


def test_corrupted_file_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"\x80\x02 this is not a torch checkpoint" * 10)
    out = tmp_path / "supernet.pt"
    with pytest.raises(OFAImportError, match="not a readable torch checkpoint"):
        import_ofa(path, "mbv3", out)
    assert not out.exists()
    with pytest.raises(OFAImportError, match="not found"):
        import_ofa(tmp_path / "absent.pth", "mbv3", out)
    torch.save({"state_dict": {"a": 1}}, path)
    with pytest.raises(OFAImportError, match="not tensors"):
        import_ofa(path, "mbv3", out)
    assert not out.exists()


def test_released_key_names_and_bare_state_dict(tmp_path):
    """Released ProxylessNAS checkpoints name blocks ``mobile_inverted_conv`` and some wrap
    BN / conv differently; they import to the same supernet as the current names."""
    state = _ofa_net("proxyless_w1.0").state_dict()
    old = {k.replace("blocks.1.conv.", "blocks.1.mobile_inverted_conv.")
            .replace("blocks.2.conv.point_linear.bn.bn.", "blocks.2.conv.point_linear.bn."): v for k, v in state.items()}
    assert old.keys() != state.keys()
    torch.save(old, tmp_path / "old.pth")
    torch.save(state, tmp_path / "new.pth")
    a = import_ofa(tmp_path / "old.pth", "proxyless", width_mult=1.0, expand=[4, 6]).state_dict()
    b = import_ofa(tmp_path / "new.pth", "proxyless", width_mult=1.0, expand=[4, 6]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_ofa_space_cannot_be_exported(tmp_path):
    with torch.random.fork_rng(devices=[]):
        model = OFASupernet(get_space("apq_mbv2_tiny"))
    with pytest.raises(OFAImportError, match="differs from the nearest one"):
        export_ofa(model, tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()
    with torch.random.fork_rng(devices=[]):
        resnet = OFASupernet(get_space("ofa_resnet50"))  # no residual middle stem conv
    with pytest.raises(OFAImportError, match="stem_residual"):
        config_of_space(resnet.space)


def test_fine_grained_hidden_width_has_no_ofa_ratio():
    space = ofa_space(OFAConfig.default("proxyless", width_mult=1.0, expand=(4, 6)))
    arch = Architecture.largest(space)
    arch.hidden[0] = space.hidden_choices(0)[1]  # 72 channels: between 4x16 and 6x16
    with pytest.raises(OFAImportError, match=r"hidden\[0\]=72"):
        arch_to_ofa(space, arch)


def test_command_line_import_and_export(tmp_path, mbv3_state, capsys):
    ckpt = tmp_path / "ofa_mbv3.pth"
    torch.save({"state_dict": mbv3_state}, ckpt)
    out = tmp_path / "supernet.pt"
    assert main(["--checkpoint", str(ckpt), "--family", "mbv3", "--ks", "3", "5", "7", "--expand", "3", "4", "6",
                 "--depth", "2", "3", "4", "--out", str(out)]) == 0
    assert "ofa_mbv3" in capsys.readouterr().out
    assert load_supernet(out).space.name == "ofa_mbv3"
    back = tmp_path / "back.pth"
    assert main(["--to-ofa", "--supernet", str(out), "--out", str(back)]) == 0
    assert "OFAMobileNetV3(" in capsys.readouterr().out
    state = torch.load(back, weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in mbv3_state.items())


# ---------------------------------------------------------------------- OFA's accuracy predictor


def _ofa_tutorial_module():
    """``ofa/tutorial/accuracy_predictor.py`` alone (the ``ofa.tutorial`` package imports
    gdown / torchvision helpers we neither have nor need)."""
    import importlib.util
    from pathlib import Path

    import ofa

    path = Path(ofa.__file__).parent / "tutorial" / "accuracy_predictor.py"
    spec = importlib.util.spec_from_file_location("_ofa_tutorial_accuracy_predictor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _random_mbv3_batch(n: int, seed: int):
    from cimnas.space import ArchBatch, QuantPolicy

    space = get_space("ofa_mbv3")
    g = torch.Generator().manual_seed(seed)
    archs = [Architecture.random(space, g) for _ in range(n)]
    batch = ArchBatch.from_designs(space, archs, [QuantPolicy.uniform(space, 8)] * n)
    return space, archs, batch


def test_ofa_arch_encoder_features_and_predictor_equal_ofa(tmp_path):
    import numpy as np
    from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder

    from cimnas.models.ofa_predictor import OFAAccuracyPredictor, import_ofa_predictor
    from cimnas.search.accuracy import load_predictor

    space, archs, batch = _random_mbv3_batch(150, seed=5)
    encoder = MobileNetArchEncoder(image_size_list=list(range(128, 225, 4)), ks_list=[3, 5, 7],
                                   expand_list=[3, 4, 6], depth_list=[2, 3, 4])
    torch.manual_seed(0)
    reference = AccuracyPredictor(encoder, device="cpu").eval()
    with torch.no_grad():
        reference.base_acc.fill_(0.75)
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "ofa_acc.pth")
    ours = import_ofa_predictor(tmp_path / "ofa_acc.pth", tmp_path / "pred.pt", space="ofa_mbv3")
    dicts = [{**arch_to_ofa(space, a), "image_size": a.resolution} for a in archs]
    expected = torch.tensor(np.array([encoder.arch2feature(d) for d in dicts]), dtype=torch.float32)
    features = ours.features(batch)
    assert features.shape == (150, 145) and torch.equal(features, expected)
    with torch.no_grad():
        want = reference.predict_acc(dicts).float()
    got = ours.predict(batch)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert float(want.std()) > 1e-4  # the architectures get different predictions
    # the search's loader recognises the file and gives the same predictions
    source = load_predictor(tmp_path / "pred.pt")
    assert isinstance(source, OFAAccuracyPredictor) and source.space.name == "ofa_mbv3"
    torch.testing.assert_close(source.predict(batch), got, rtol=0, atol=0)


def test_ofa_tutorial_predictor_features_and_predictions_equal_ofa():
    from cimnas.models.ofa_predictor import OFAAccuracyPredictor

    tutorial = _ofa_tutorial_module()
    torch.manual_seed(1)
    reference = tutorial.AccuracyPredictor(pretrained=False, device="cpu")
    space, archs, batch = _random_mbv3_batch(120, seed=9)
    ours = OFAAccuracyPredictor.from_ofa_state_dict(reference.model.state_dict(), "ofa_mbv3")
    population = []
    for a in archs:
        o = arch_to_ofa(space, a)
        population.append({"ks": o["ks"], "e": o["e"], "d": o["d"], "r": [a.resolution]})
    expected = torch.stack([tutorial.AccuracyPredictor.spec2feats(list(p["ks"]), list(p["e"]), list(p["d"]), p["r"][0])
                            for p in population])
    assert torch.equal(ours.features(batch), expected)
    want = reference.predict_accuracy(population).squeeze(-1)
    torch.testing.assert_close(ours.predict(batch), want, rtol=0, atol=1e-6)


def test_ofa_predictor_rejects_other_spaces_and_layouts(tmp_path):
    from cimnas.models.ofa_predictor import OFAAccuracyPredictor, OFAPredictorError

    with pytest.raises(OFAPredictorError, match="not an OFA-MobileNetV3 space"):
        OFAAccuracyPredictor("apq_mbv2")
    with pytest.raises(OFAPredictorError, match="unknown OFA predictor state dict"):
        OFAAccuracyPredictor.from_ofa_state_dict({"w": torch.zeros(2)})
    state = OFAAccuracyPredictor("ofa_mbv3").state_dict()
    state["layers.1.0.weight"] = torch.zeros(400, 300)
    with pytest.raises(OFAPredictorError, match=r"layers.1.0.weight.*expected shape \[400, 400\], found \[400, 300\]"):
        OFAAccuracyPredictor.from_ofa_state_dict(state)


def test_ofa_predictor_drives_a_short_ofa_mbv3_search(tmp_path):
    from ofa.nas.accuracy_predictor import AccuracyPredictor, MobileNetArchEncoder

    from cimnas.models.ofa_predictor import import_ofa_predictor
    from cimnas.search.cli import main as search_main

    torch.manual_seed(2)
    ref = AccuracyPredictor(MobileNetArchEncoder(image_size_list=list(range(128, 225, 4))), device="cpu")
    with torch.no_grad():
        ref.base_acc.fill_(0.75)
    torch.save(ref.state_dict(), tmp_path / "ofa_acc.pth")
    import_ofa_predictor(tmp_path / "ofa_acc.pth", tmp_path / "pred.pt")
    out = tmp_path / "search"
    assert search_main(["--space", "ofa_mbv3", "--predictor", str(tmp_path / "pred.pt"), "--value_stats", "null",
                        "--ga.popsize", "6", "--ga.generations", "2", "--ga.seed", "1", "--output.dir", str(out),
                        "--output.progress", "false", "--wandb.mode", "disabled"]) == 0
    import json

    best = json.loads((out / "best.json").read_text())
    assert best["space"] == "ofa_mbv3"
    Architecture.from_dict(best["architecture"]).validate(get_space("ofa_mbv3"))
    assert 0.0 < best["metrics"]["accuracy"] < 2.0


# ---------------------------------------------------------------------- end to end


def test_imported_proxyless_supernet_runs_value_stats_and_a_short_search(tmp_path):
    """An imported random-weight OFA-ProxylessNAS (w1.0, e {4,6}) supernet at 64 px goes
    through the existing jobs unchanged: value statistics, then search.py with them; the
    winning design is accepted by fine-tuning's design check against the imported supernet."""
    import json

    from cimnas.data.fashion_mnist import find_fashion_mnist
    from cimnas.models.predictor import AccuracyPredictor
    from cimnas.search import value_stats
    from cimnas.search.cli import main as search_main

    try:
        find_fashion_mnist()
    except Exception as err:  # the value-stats job reads its images from Fashion-MNIST
        pytest.skip(f"Fashion-MNIST not available: {err}")
    net = _ofa_net("proxyless_w1.0", n_classes=1000)  # ImageNet's classes, as the search's preset
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ofa.pth")
    supernet = tmp_path / "supernet.pt"
    assert main(["--checkpoint", str(tmp_path / "ofa.pth"), "--family", "proxyless", "--width-mult", "1.0",
                 "--expand", "4", "6", "--resolutions", "64", "--out", str(supernet)]) == 0
    value_stats.main(["--supernet", str(supernet), "--out", str(tmp_path / "value_stats.pt"), "--images", "4"])
    stats = value_stats.load_value_stats(tmp_path / "value_stats.pt", get_space("ofa_proxyless_w1.0"))
    assert stats["input_hist"].shape[1] == 31 and torch.isfinite(stats["input_hist"]).all()
    torch.manual_seed(0)
    AccuracyPredictor(get_space("ofa_proxyless_w1.0")).save(tmp_path / "predictor.pt")
    out = tmp_path / "search"
    assert search_main(["--space", "ofa_proxyless_w1.0", "--predictor", str(tmp_path / "predictor.pt"),
                        "--value_stats", str(tmp_path / "value_stats.pt"), "--ga.popsize", "6",
                        "--ga.generations", "2", "--ga.seed", "1", "--output.dir", str(out),
                        "--output.progress", "false", "--wandb.mode", "disabled"]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["space"] == "ofa_proxyless_w1.0"
    Architecture.from_dict(best["architecture"]).validate(get_space("ofa_proxyless_w1.0"))
    # the winner fits the supernet imported at the space's own resolution: fine-tuning accepts it
    from cimnas.models.design import load_design

    import_ofa(tmp_path / "ofa.pth", "proxyless", tmp_path / "supernet224.pt", width_mult=1.0, expand=[4, 6])
    design = load_design(out / "best.json", space=load_supernet(tmp_path / "supernet224.pt").space)
    assert design.architecture.to_dict() == best["architecture"]
    from cimnas.models.finetune import FinetuneModule

    module = FinetuneModule(design=str(out / "best.json"), supernet=str(tmp_path / "supernet224.pt"))
    bns = [m for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)  # OFA-ProxylessNAS's BN epsilon reaches the QAT network


def test_imagefolder_evaluation_of_an_imported_supernet(tmp_path):
    """``python -m cimnas.experiments.ofa_eval`` on a tiny ImageFolder tree: named and OFA-form
    subnets at their own resolutions, BN recalibrated, and value statistics for the search."""
    import json
    from pathlib import Path

    from PIL import Image

    from cimnas.experiments.ofa_eval import evaluate_imagefolder
    from cimnas.models.supernet import evaluate_accuracy, recalibrate_bn
    from cimnas.data.image_folder import ImageFolderDataModule
    from cimnas.search.value_stats import load_value_stats

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 3)):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / "data" / split / c / f"{i}.png")
    torch.save(_ofa_net("mbv3_w1.0").state_dict(), tmp_path / "ofa.pth")
    supernet = tmp_path / "supernet.pt"
    import_ofa(tmp_path / "ofa.pth", "mbv3", supernet, resolutions=[32, 40])
    space = load_supernet(supernet).space
    rng = random.Random(0)
    ofa_args, arch = _random_subnet(space, "mbv3_w1.0", rng)
    (tmp_path / "archs.json").write_text(json.dumps([{**ofa_args, "image_size": 32}]))
    res = evaluate_imagefolder(str(supernet), str(tmp_path / "data"), subnets=["largest", "smallest"],
                               archs=str(tmp_path / "archs.json"), calib_images=8, calib_batch_size=4,
                               val_size=2, num_workers=0, device="cpu", value_stats_out=str(tmp_path / "vs.pt"),
                               value_stats_images=2, out=str(tmp_path / "eval.json"))
    assert set(res["subnets"]) == {"largest", "smallest", "arch0"}
    assert res["subnets"]["arch0"]["architecture"] == {**arch.to_dict(), "resolution": 32}
    assert json.loads((tmp_path / "eval.json").read_text())["subnets"]["largest"]["top1"] == res["subnets"]["largest"]["top1"]
    # the same steps by hand give the same accuracy
    net = load_supernet(supernet)
    dm = ImageFolderDataModule(str(tmp_path / "data"), batch_size=250, num_workers=0, resolution=32, val_size=2)
    net.set_active(Architecture.smallest(space))
    recalibrate_bn(net, dm.calibration_batches(8, 4))
    assert evaluate_accuracy(net, dm.test_dataloader()) == res["subnets"]["smallest"]["top1"]
    stats = load_value_stats(tmp_path / "vs.pt", space)
    assert torch.allclose(stats["input_hist"].sum(-1), torch.ones(stats["input_hist"].shape[0]))
    # the predictor's measurement job takes the imported supernet unchanged
    from cimnas.models.predictor.measure import measure

    records = measure(str(supernet), ImageFolderDataModule(str(tmp_path / "data"), num_workers=0, resolution=40,
                                                           val_size=2), str(tmp_path / "records.jsonl"),
                      num_samples=2, quantized=True, calibration_images=8, calibration_batch_size=4, eval_batch_size=4)
    rows = [json.loads(line) for line in Path(records).read_text().splitlines()]
    assert len(rows) == 2 and all(0.0 <= r["accuracy"] <= 1.0 and r["space"] == "ofa_mbv3" for r in rows)
