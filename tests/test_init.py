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
