"""model.init and vidssl import: weights in each official layout, built here from the key names
their code produces (no download), load tensor-exact into the backbone and never its heads."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from vidssl.cli import main
from vidssl.engine.config import load_config
from vidssl.errors import VidsslError
from vidssl.eval.encoders import load_encoder
from vidssl.models.backbones import Backbone
from vidssl.models.init import init_backbone


@pytest.fixture(scope="module")
def resnet18() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()  # conv1, bn1, layer1-4, fc


def backbone_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def assert_loaded(backbone: Backbone, expected: dict[str, torch.Tensor]) -> None:
    own = backbone.net.state_dict()
    assert set(own) == set(expected)
    assert all(torch.equal(own[k], expected[k]) for k in own)


def head(prefix: str, hidden: int = 512, out: int = 128) -> dict[str, torch.Tensor]:
    return {f"{prefix}.0.weight": torch.randn(hidden, 512), f"{prefix}.0.bias": torch.randn(hidden),
            f"{prefix}.2.weight": torch.randn(out, hidden), f"{prefix}.2.bias": torch.randn(out)}


def layouts(resnet18: dict[str, torch.Tensor]) -> dict[str, dict]:
    """One file per official layout, keyed as each code base writes it."""
    other = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in resnet18.items()}  # a second network
    moco_q = {**backbone_of(resnet18), **head("fc")}  # MoCo-v2: the fc of the query encoder is an MLP
    return {
        "moco": {"epoch": 200, "arch": "resnet18", "optimizer": {},
                 "state_dict": {**{f"module.encoder_q.{k}": v for k, v in moco_q.items()},
                                **{f"module.encoder_k.{k}": v for k, v in other.items()},
                                "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1)}},
        "seco": {"opt": argparse.Namespace(nce_k=131072, arch="resnet18"), "epoch": 400, "optimizer": {},
                 "scheduler": {}, "contrast": {"memory": torch.randn(8, 128)},
                 "model": {**{f"module.{k}": v for k, v in backbone_of(resnet18).items()},
                           **{f"module.{k}": v for name in ("fc_inter", "fc_intra", "fc_order")
                              for k, v in head(name).items()},
                           "module.fc_order_classifier.weight": torch.randn(2, 384),
                           "module.fc_order_classifier.bias": torch.randn(2)},
                 "model_ema": backbone_of(other)},
        "vclr": {"opt": argparse.Namespace(nce_k=131072), "epoch": 400, "contrast_tsn": {"memory": torch.randn(8, 128)},
                 "model": {**{f"module.{k}": v for k, v in backbone_of(resnet18).items()}, **head("module.fc_tsn")},
                 "model_ema": backbone_of(other)},
        "torchvision": resnet18,
    }


@pytest.mark.parametrize("fmt", ["moco", "seco", "vclr", "torchvision"])
def test_each_official_layout_loads_tensor_exact(tmp_path, resnet18, fmt):
    path = tmp_path / "weights.pth.tar"
    torch.save(layouts(resnet18)[fmt], path)
    for given in (fmt, "auto"):  # named, and told apart by its structure
        backbone = Backbone("resnet18")
        report = init_backbone(backbone, path, given)
        assert report.format == fmt and not report.missing
        assert report.matched == len(backbone_of(resnet18))
        assert_loaded(backbone, backbone_of(resnet18))
        assert any("fc" in k for k in report.unexpected)  # the head is reported, never loaded
        assert not set(report.unexpected) & set(backbone.net.state_dict())


def test_safetensors_and_vidssl_checkpoints_and_exports(tmp_path, resnet18):
    save_file({k: v.contiguous() for k, v in resnet18.items()}, str(tmp_path / "tv.safetensors"))
    backbone = Backbone("resnet18")
    assert init_backbone(backbone, tmp_path / "tv.safetensors").format == "torchvision"
    assert_loaded(backbone, backbone_of(resnet18))
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "seco", "--out", str(run), "data.synthetic_videos=40", "data.num_workers=0",
                 "train.batch_size=8", "train.max_steps=1", "seco.queue_size=64"]) == 0
    trained = load_encoder(str(run / "checkpoint.pt")).backbone.net.state_dict()
    assert main(["export", str(run / "checkpoint.pt"), str(tmp_path / "seco.safetensors")]) == 0
    for source in (run / "checkpoint.pt", tmp_path / "seco.safetensors"):
        fresh = Backbone("tiny2d")
        assert init_backbone(fresh, source).format == "vidssl"
        assert_loaded(fresh, trained)


@pytest.mark.parametrize("state,message", [
    ({"conv1.weight": torch.zeros(64, 3, 7, 7)}, "only 1 of resnet18's"),
    ({"conv1.weight": torch.zeros(64, 3, 3, 3)}, "another shape"),
])
def test_too_little_or_misshapen_weights_are_errors(tmp_path, state, message):
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(VidsslError, match=message):
        init_backbone(Backbone("resnet18"), tmp_path / "w.pth")


def test_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(VidsslError, match="not loadable weights"):
        init_backbone(Backbone("resnet18"), tmp_path / "evil.pth")


def test_vidssl_import_then_evaluate(tmp_path, resnet18, capsys):
    torch.save(layouts(resnet18)["seco"], tmp_path / "seco_official.pth")
    out = tmp_path / "seco_r18.safetensors"
    assert main(["import", "seco", str(tmp_path / "seco_official.pth"), str(out), "--arch", "resnet18",
                 "--size", "32"]) == 0
    assert "18 tensors matched" not in capsys.readouterr().out  # resnet18 has 100+ tensors
    enc = load_encoder(str(out))
    assert enc.name == "import:seco" and enc.input_size == 32
    assert_loaded(enc.backbone, backbone_of(resnet18))
    assert json.loads(out.with_suffix(".json").read_text())["source_weights"].endswith("seco_official.pth")


def test_paper_configs_that_start_from_moco_require_model_init(tmp_path, resnet18, capsys):
    small = ["data.synthetic_videos=40", "data.num_workers=0", "train.batch_size=8", "train.max_steps=1",
             "model.arch=resnet18", "augment.size=32", "seco.queue_size=64", "data.source=synthetic",
             "data.layout=auto", "train.epochs=1"]
    code = main(["pretrain", "--config", "seco_kinetics400", "--out", str(tmp_path / "a"), *small])
    assert code == 2
    assert "model.init: this setting starts from moco_v2_200ep_pretrain.pth.tar" in capsys.readouterr().err
    torch.save(layouts(resnet18)["moco"], tmp_path / "moco.pth.tar")
    assert main(["pretrain", "--config", "seco_kinetics400", "--out", str(tmp_path / "b"), *small,
                 f"model.init={tmp_path / 'moco.pth.tar'}"]) == 0
    assert "initialised from" in capsys.readouterr().err
    assert load_config("seco_kinetics400").model.init_from.startswith("moco_v2_200ep")


def test_eval_init_gives_a_random_encoder_other_weights(tmp_path, capsys):
    seco = tmp_path / "seco.safetensors"
    assert main(["pretrain", "--method", "seco", "--out", str(tmp_path / "run"), "data.synthetic_videos=40",
                 "data.num_workers=0", "train.batch_size=8", "train.max_steps=2", "seco.queue_size=64"]) == 0
    assert main(["export", str(tmp_path / "run" / "checkpoint.pt"), str(seco)]) == 0
    common = ["--synthetic-videos", "40", "--synthetic-size", "32", "--synthetic-frames", "12", "--num", "2",
              "--out", str(tmp_path / "eval")]
    assert main(["eval", "linear", "--encoder", "random:tiny2d", "--init", str(seco), *common]) == 0
    result = json.loads(next((tmp_path / "eval").glob("linear-*.json")).read_text())
    assert result["encoder"]["name"] == "init:seco.safetensors" and "-init-" in result["encoder"]["fingerprint"]
    capsys.readouterr()
    code = main(["eval", "linear", "--encoder", str(seco), "--init", str(seco), *common])
    assert code == 2 and "--init applies to random:ARCH encoders" in capsys.readouterr().err


# CoCLR's S3D as its backbone/s3dg.py names it (module names and structure written from that file;
# BatchNorm eps set to torchvision's 1e-3 here so that the two networks' outputs can be compared)
class _CoBasic(torch.nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = torch.nn.Conv3d(cin, cout, k, stride, padding, bias=False)
        self.bn = torch.nn.BatchNorm3d(cout, eps=1e-3)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class _CoST(torch.nn.Module):
    def __init__(self, cin, cout, k, stride, padding):
        super().__init__()
        t, s = stride if isinstance(stride, tuple) else (stride, stride)
        self.conv1 = torch.nn.Conv3d(cin, cout, (1, k, k), (1, s, s), (0, padding, padding), bias=False)
        self.conv2 = torch.nn.Conv3d(cout, cout, (k, 1, 1), (t, 1, 1), (padding, 0, 0), bias=False)
        self.bn1, self.bn2 = torch.nn.BatchNorm3d(cout, eps=1e-3), torch.nn.BatchNorm3d(cout, eps=1e-3)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class _CoSep(torch.nn.Module):
    def __init__(self, cin, planes):
        super().__init__()
        b0, b1a, b1, b2a, b2, b3 = planes
        self.branch0 = torch.nn.Sequential(_CoBasic(cin, b0, 1))
        self.branch1 = torch.nn.Sequential(_CoBasic(cin, b1a, 1), _CoST(b1a, b1, 3, 1, 1))
        self.branch2 = torch.nn.Sequential(_CoBasic(cin, b2a, 1), _CoST(b2a, b2, 3, 1, 1))
        self.branch3 = torch.nn.Sequential(torch.nn.MaxPool3d(3, 1, 1), _CoBasic(cin, b3, 1))

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


class _CoS3D(torch.nn.Module):
    def __init__(self):
        super().__init__()
        pool = torch.nn.MaxPool3d
        self.Conv_1a = _CoST(3, 64, 7, 2, 3)
        self.block1 = torch.nn.Sequential(self.Conv_1a)
        self.Conv_2b, self.Conv_2c = _CoBasic(64, 64, 1), _CoST(64, 192, 3, 1, 1)
        self.block2 = torch.nn.Sequential(pool((1, 3, 3), (1, 2, 2), (0, 1, 1)), self.Conv_2b, self.Conv_2c)
        self.Mixed_3b, self.Mixed_3c = _CoSep(192, [64, 96, 128, 16, 32, 32]), _CoSep(256, [128, 128, 192, 32, 96, 64])
        self.block3 = torch.nn.Sequential(pool((1, 3, 3), (1, 2, 2), (0, 1, 1)), self.Mixed_3b, self.Mixed_3c)
        self.Mixed_4b = _CoSep(480, [192, 96, 208, 16, 48, 64])
        self.Mixed_4c = _CoSep(512, [160, 112, 224, 24, 64, 64])
        self.Mixed_4d = _CoSep(512, [128, 128, 256, 24, 64, 64])
        self.Mixed_4e = _CoSep(512, [112, 144, 288, 32, 64, 64])
        self.Mixed_4f = _CoSep(528, [256, 160, 320, 32, 128, 128])
        self.block4 = torch.nn.Sequential(pool(3, 2, 1), self.Mixed_4b, self.Mixed_4c, self.Mixed_4d, self.Mixed_4e,
                                          self.Mixed_4f)
        self.Mixed_5b = _CoSep(832, [256, 160, 320, 32, 128, 128])
        self.Mixed_5c = _CoSep(832, [384, 192, 384, 48, 128, 128])
        self.block5 = torch.nn.Sequential(pool(2, 2, 0), self.Mixed_5b, self.Mixed_5c)

    def forward(self, x):
        return self.block5(self.block4(self.block3(self.block2(self.block1(x)))))


def _random_batch_norms(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so that a misplaced one shows."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net


def test_an_official_coclr_s3d_checkpoint_computes_the_same_features(tmp_path, capsys):
    torch.manual_seed(0)
    coclr = _random_batch_norms(_CoS3D())
    state = {f"module.encoder_q.0.{k}": v for k, v in coclr.state_dict().items()}
    assert "module.encoder_q.0.block1.0.conv1.weight" in state  # CoCLR saves each layer under two names
    state["module.encoder_q.2.weight"] = torch.zeros(1024, 1024, 1, 1, 1)  # its projection head
    state["module.encoder_k.0.Conv_1a.conv1.weight"] = torch.zeros(64, 3, 1, 7, 7)
    torch.save({"epoch": 182, "state_dict": state, "optimizer": {}}, tmp_path / "coclr.pth.tar")
    backbone = Backbone("s3d")
    report = init_backbone(backbone, tmp_path / "coclr.pth.tar")
    assert report.format == "coclr" and not report.missing and "encoder_q.2.weight" in report.unexpected
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.eval().net.features(x), coclr.eval()(x), atol=1e-5)
    gated = {**state, "module.encoder_q.0.Mixed_3b.gating_b0.fc.weight": torch.zeros(64, 64)}
    torch.save({"state_dict": gated}, tmp_path / "s3dg.pth.tar")
    assert main(["import", "coclr", str(tmp_path / "s3dg.pth.tar"), str(tmp_path / "x.safetensors"),
                 "--arch", "s3d"]) == 2
    assert "S3D-G" in capsys.readouterr().err
    import_then_evaluate(tmp_path, "coclr", tmp_path / "coclr.pth.tar", "s3d")


# MLFO's official backbone as its r3d.py names it (Hara et al.'s 3D ResNet-18), and the top-level
# names of its GreatModel that a checkpoint holds beside it
class _HaraBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm3d(cout)
        self.conv2 = torch.nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm3d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(torch.nn.Conv3d(cin, cout, 1, stride, bias=False),
                                                  torch.nn.BatchNorm3d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class _HaraR3D18(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv3d(3, 64, (7, 7, 7), (1, 2, 2), (3, 3, 3), bias=False)
        self.bn1 = torch.nn.BatchNorm3d(64)
        self.maxpool = torch.nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))
        widths, cin = (64, 128, 256, 512), 64
        for n, w in enumerate(widths, 1):
            setattr(self, f"layer{n}", torch.nn.Sequential(_HaraBlock(cin, w, 1 if n == 1 else 2), _HaraBlock(w, w, 1)))
            cin = w
        self.fc = torch.nn.Linear(512, 400)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def test_an_official_mlfo_checkpoint_computes_the_same_features(tmp_path):
    torch.manual_seed(0)
    hara = _random_batch_norms(_HaraR3D18())
    state = {f"backbone.{k}": v for k, v in hara.state_dict().items()}
    state.update({"prototype.weight": torch.zeros(1000, 128), "project_low_fine.0.weight": torch.zeros(128, 128, 1),
                  "backbone.melow.0.conv1.weight": torch.zeros(8, 128, 1, 1)})
    torch.save(state, tmp_path / "r3d_99_1.234.pth")  # what train.py writes each epoch
    backbone = Backbone("r3d_18_hara")
    report = init_backbone(backbone, tmp_path / "r3d_99_1.234.pth")
    assert report.format == "mlfo" and not report.missing and "prototype.weight" in report.unexpected
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone.eval().forward_levels(x)["high"], hara.eval()(x), atol=1e-5)
    with pytest.raises(VidsslError, match="another shape"):
        init_backbone(Backbone("r3d_18"), tmp_path / "r3d_99_1.234.pth")  # torchvision's 3x7x7 stem
    import_then_evaluate(tmp_path, "mlfo", tmp_path / "r3d_99_1.234.pth", "r3d_18_hara")


def import_then_evaluate(tmp_path, fmt: str, src, arch: str) -> None:
    """``vidssl import`` writes an export that ``vidssl eval linear --encoder`` evaluates."""
    out = tmp_path / f"{fmt}.safetensors"
    assert main(["import", fmt, str(src), str(out), "--arch", arch, "--size", "32", "--frames", "8"]) == 0
    assert main(["eval", "linear", "--encoder", str(out), "--synthetic-videos", "40", "--synthetic-size", "32",
                 "--synthetic-frames", "12", "--num", "2", "--out", str(tmp_path / "eval")]) == 0
    (result,) = (tmp_path / "eval").glob("linear-*.json")
    assert json.loads(result.read_text())["encoder"]["name"] == f"import:{fmt}"
