"""Untrimmed videos: the ActivityNet reader (good and malformed JSON), the built-in untrimmed
videos, `vidssl extract` (snippets, resume, refusal), BMN's pieces against hand-computed cases,
Soft-NMS and AR@AN by hand, and the chain end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vidssl.cli import main
from vidssl.data.sources import detect_layout, load_source, parse_activitynet, read_activitynet
from vidssl.data.untrimmed import UntrimmedVideos
from vidssl.errors import DataError
from vidssl.eval.bmn import (
    BMN,
    boundary_matching_mask,
    pem_cls_loss,
    proposals,
    tem_loss,
    training_targets,
    valid_proposals,
)
from vidssl.eval.extract import rescale, snippet_centres, snippet_frames
from vidssl.eval.localize import average_recall, soft_nms

# --- ActivityNet reader --------------------------------------------------------------------------


def _anet(tmp_path, database: dict, videos=("a1", "b2", "c3")):
    for vid in videos:
        (tmp_path / f"v_{vid}.mp4").write_bytes(b"")
    path = tmp_path / "activity_net.v1-3.min.json"
    path.write_text(json.dumps({"version": "VERSION 1.3", "database": database}))
    return path


def test_activitynet_subsets_classes_and_the_label_covering_longest(tmp_path):
    database = {
        "a1": {"subset": "training", "duration": 100.0, "annotations": [
            {"segment": [0, 10], "label": "Zumba"}, {"segment": [20, 70], "label": "Archery"}]},
        "b2": {"subset": "validation", "duration": 50, "annotations": [{"segment": [5, 9.5], "label": "Zumba"}]},
        "c3": {"subset": "testing", "duration": 30, "annotations": []},
    }
    path = _anet(tmp_path, database)
    assert detect_layout(tmp_path) == "activitynet" and detect_layout(path) == "activitynet"
    train = parse_activitynet(tmp_path, "train")
    assert train.class_names == ["Archery", "Zumba"]
    assert [(r.path.endswith("v_a1.mp4"), r.label) for r in train.records] == [(True, 0)]  # Archery covers 50 s
    test = load_source(tmp_path, "auto", subset="test")
    assert [r.label for r in test.records] == [1] and not test.problems
    everything = parse_activitynet(path, "all")
    assert sorted(r.label is None for r in everything.records) == [False, False, True]  # testing: unlabeled
    _, videos, _ = read_activitynet(path)
    assert videos["b2"].segments == ((5.0, 9.5, 1),) and videos["b2"].duration == 50


@pytest.mark.parametrize("entry, reason", [
    ({"subset": "training", "duration": 10, "annotations": [{"segment": [5, 2], "label": "Zumba"}]}, "segment"),
    ({"subset": "training", "duration": 10, "annotations": [{"segment": [1, "x"], "label": "Zumba"}]}, "segment"),
    ({"subset": "training", "duration": -1, "annotations": []}, "duration"),
    ({"subset": "train", "duration": 10, "annotations": []}, "subset"),
    ({"subset": "training", "duration": 10, "annotations": {"segment": [0, 1]}}, "not a list"),
    (["not", "a", "mapping"], "not a mapping"),
])
def test_malformed_activitynet_entries_are_problems_naming_the_video(tmp_path, entry, reason):
    database = {"a1": entry, "b2": {"subset": "training", "duration": 9, "annotations": [
        {"segment": [0, 4], "label": "Zumba"}]}}
    source = parse_activitynet(_anet(tmp_path, database), "train")
    assert [r.path.endswith("v_b2.mp4") for r in source.records] == [True]
    (problem,) = source.problems
    assert "'a1'" in problem.where and reason in problem.reason


def test_activitynet_missing_videos_ids_and_bad_json(tmp_path):
    database = {"zz9": {"subset": "training", "duration": 9, "annotations": [{"segment": [0, 4], "label": "Zumba"}]},
                "../up": {"subset": "training", "duration": 9, "annotations": []}}
    source = parse_activitynet(_anet(tmp_path, database), "train")
    reasons = sorted(p.reason for p in source.problems)
    assert not source.records and any("missing video v_zz9" in r for r in reasons)
    assert any("not a plain name" in r for r in reasons)
    (tmp_path / "activity_net.v1-3.min.json").write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        parse_activitynet(tmp_path)
    (tmp_path / "activity_net.v1-3.min.json").write_text(json.dumps({"database": [1]}))
    with pytest.raises(DataError, match="no 'database'"):
        parse_activitynet(tmp_path)


# --- built-in untrimmed videos -------------------------------------------------------------------


def test_untrimmed_instances_are_exact_and_the_actor_only_appears_inside_them():
    videos = UntrimmedVideos(num_videos=3, size=32, frames=96)
    for k in range(3):
        spans = videos.instances(k)
        assert 1 <= len(spans) <= 3 and spans[0][0] >= 8 and spans[-1][1] <= 96 - 8
        assert all(b[0] - a[1] >= 8 for a, b in zip(spans, spans[1:], strict=False))
    k = 0
    frames = videos.render(k).float()
    scenes = videos.scenes
    p = scenes.video_params(k)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    first, end = videos.instances(k)[0]
    for t in (first - 1, first + 2, end):  # outside, inside, outside
        backdrop = torch.from_numpy(np.clip(scenes.backdrop(k, t / 95, p, xx, yy), 0, 255).astype(np.uint8))
        same = torch.equal(frames[t].permute(1, 2, 0).to(torch.uint8), backdrop)
        assert same == (not first <= t < end)
    note = videos.annotation(k)
    assert note["annotations"][0]["segment"] == [first / 25.0, end / 25.0] and note["duration"] == 96 / 25


# --- extract -------------------------------------------------------------------------------------


def test_snippets_and_rescaling():
    assert snippet_centres(40, 16) == [8, 24] and snippet_centres(5, 16) == [2]
    assert snippet_frames(1, 4, 10) == [0, 0, 1, 2] and snippet_frames(9, 4, 10) == [7, 8, 9, 9]
    x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    assert torch.allclose(rescale(x, 5), torch.tensor([[0, 10], [0.5, 15], [1, 20], [1.5, 25], [2, 30.0]]))
    assert torch.equal(rescale(x[:1], 3), x[:1].expand(3, 2))


@pytest.fixture(scope="module")
def untrimmed(tmp_path_factory):
    root = tmp_path_factory.mktemp("anet")
    UntrimmedVideos(num_videos=12, size=32, frames=64).write_activitynet(root)
    return root


def test_extract_writes_resumes_and_refuses_another_protocol(untrimmed, tmp_path, capsys):
    out = tmp_path / "feats"
    args = ["extract", str(untrimmed), "--encoder", "random:tiny2d", "--out", str(out), "--stride", "8"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["videos"]) == 12 and manifest["protocol"]["stride"] == 8
    entry = manifest["videos"]["synth0_0000"]
    feats = np.load(out / entry["file"])
    assert feats.shape == (8, 128) and feats.dtype == np.float16 and entry["snippets"] == 8
    (out / entry["file"]).unlink()  # as if killed before this video
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert main(args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert len(after) == 12 and all(after[n] == t for n, t in before.items())  # only the missing one rewritten
    assert np.array_equal(np.load(out / entry["file"]), feats)
    assert main([*args[:-1], "4"]) == 2 and "another encoder or protocol" in capsys.readouterr().err


def test_extract_lists_an_unreadable_video_and_goes_on(tmp_path, capsys):
    from vidssl.data.encode import write_video

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "good.mp4", torch.zeros(10, 3, 32, 32, dtype=torch.uint8))
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + bytes(200))
    out = tmp_path / "feats"
    assert main(["extract", str(tmp_path / "videos"), "--encoder", "random:tiny2d", "--out", str(out),
                 "--stride", "4"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["videos"]) == ["good"] and list(manifest["skipped"]) == [str(tmp_path / "videos" /
                                                                                  "broken.mp4")]
    assert "1 unreadable" in capsys.readouterr().out


def test_extract_rescales_for_bmn_and_writes_safetensors(untrimmed, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "feats"
    assert main(["extract", str(untrimmed), "--encoder", "random:tiny2d", "--out", str(out), "--rescale", "16",
                 "--format", "safetensors", "--dtype", "float32", "--subset", "test"]) == 0
    files = sorted(out.glob("*.safetensors"))
    assert len(files) == 4 and load_file(str(files[0]))["features"].shape == (16, 128)


# --- BMN -----------------------------------------------------------------------------------------


def test_boundary_matching_samples_by_hand():
    mask = boundary_matching_mask(tscale=6, dscale=6, num_sample=2, per_bin=1, ratio=0.0).view(6, 2, 6, 6)
    # proposal t=1, d=2 covers positions 1..3: its two samples sit exactly on 1 and 3
    assert mask[:, 0, 2, 1].tolist() == [0, 1, 0, 0, 0, 0] and mask[:, 1, 2, 1].tolist() == [0, 0, 0, 1, 0, 0]
    # ratio 0.5 widens it by 1.5 on each side: samples at -0.5 (BMN's code gives it to position 0) and 4.5
    wide = boundary_matching_mask(6, 6, 2, 1, 0.5).view(6, 2, 6, 6)
    assert wide[:, 0, 2, 1].tolist() == [1, 0, 0, 0, 0, 0]
    assert wide[:, 1, 2, 1].tolist() == pytest.approx([0, 0, 0, 0, 0.5, 0.5])
    assert wide[:, :, 5, 1].abs().sum() == 0  # t=1 lasting 6 ends past the sequence
    assert valid_proposals(6, 6)[5, 0] == 1 and valid_proposals(6, 6)[5, 1] == 0


def test_bmn_targets_by_hand():
    iou, start, end = training_targets(torch.tensor([[0.25, 0.5]]), tscale=8, dscale=8)
    assert iou[1, 2] == 1.0  # positions 2..3 = [0.25, 0.5)
    assert iou[0, 2] == pytest.approx(0.5) and iou[3, 2] == pytest.approx(0.5)
    # the start region [2 - 1.5, 2 + 1.5] / 8 covers the anchors of positions 1, 2, 3 whole
    assert start.tolist() == [0, 1, 1, 1, 0, 0, 0, 0] and end.tolist() == [0, 0, 0, 1, 1, 1, 0, 0]


def test_tem_and_pem_classification_losses_by_hand():
    pred, gt = torch.tensor([0.9, 0.2, 0.3, 0.6]), torch.tensor([1.0, 0.0, 0.0, 0.0])
    # r = 4 entries / 1 positive: positive weight 2, negatives 2/3
    expected = -(2 * math.log(0.9) + 2 / 3 * (math.log(0.8) + math.log(0.7) + math.log(0.4))) / 4
    assert float(tem_loss(pred, pred, gt, gt)) == pytest.approx(2 * expected, rel=1e-4)
    valid = torch.tensor([1.0, 1.0, 1.0, 0.0])
    iou = torch.tensor([0.95, 0.5, 0.1, 0.0])
    # 1 positive + 2 valid negatives: r = 3, weights 1.5 and 0.75, divided by 3 entries
    expected = -(1.5 * math.log(0.9) + 0.75 * (math.log(0.8) + math.log(0.7))) / 3
    assert float(pem_cls_loss(pred, iou, valid)) == pytest.approx(expected, rel=1e-4)


def test_bmn_shapes_and_proposals_from_peaks():
    net = BMN(feat_dim=8, tscale=8, dscale=8, num_sample=4, hidden=16)
    conf, start, end = net(torch.randn(2, 8, 8))
    assert conf.shape == (2, 2, 8, 8) and start.shape == (2, 8) and ((conf >= 0) & (conf <= 1)).all()
    s = torch.tensor([0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    e = torch.tensor([0.1, 0.1, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1])
    props = proposals(torch.ones(2, 8, 8), s, e)
    best = props[props[:, 2].argmax()]
    assert best[:2].tolist() == [1 / 8, 4 / 8] and best[2] == pytest.approx(0.72)


# --- Soft-NMS and AR@AN --------------------------------------------------------------------------


def test_soft_nms_decays_only_heavy_overlaps():
    props = np.array([[0.0, 0.5, 0.9], [0.0, 0.4, 0.8], [0.6, 0.9, 0.7]])
    kept = soft_nms(props, alpha=0.4, t1=0.5, t2=0.9)
    # [0, 0.4] overlaps the kept [0, 0.5] by 0.8 > 0.5 + 0.4 * 0.5: score 0.8 exp(-0.64 / 0.4)
    assert kept[0].tolist() == [0.0, 0.5, 0.9] and kept[1].tolist() == [0.6, 0.9, 0.7]
    assert kept[2, 2] == pytest.approx(0.8 * math.exp(-0.64 / 0.4))
    assert len(soft_nms(props, top_k=2)) == 2


def test_average_recall_by_hand():
    truth = {"v": np.array([[0.0, 10.0]])}
    exact = average_recall(truth, {"v": np.array([[0.0, 10.0, 0.9]])})
    assert exact["AR@1"] == 1.0 and exact["AUC"] == pytest.approx(100.0 * (100 - 1) / 100, abs=1.0)
    partial = average_recall(truth, {"v": np.array([[0.0, 6.0, 0.9]])})  # tIoU 0.6: 3 of 10 thresholds
    assert partial["AR@1"] == pytest.approx(0.3)
    late = average_recall(truth, {"v": np.array([[20.0, 30.0, 0.9], [0.0, 10.0, 0.5]])})
    assert late["AR@1"] == 0.0 and late["AR@100"] == 1.0  # found by the second proposal
    two = {"a": np.array([[0.0, 10.0]]), "b": np.array([[0.0, 10.0]])}
    half = average_recall(two, {"a": np.array([[0.0, 10.0, 1.0]]), "b": np.array([[50.0, 60.0, 1.0]])})
    assert half["AR@100"] == 0.5


def test_extract_then_localize_end_to_end(untrimmed, tmp_path, capsys):
    feats = tmp_path / "feats"
    assert main(["extract", str(untrimmed), "--encoder", "random:tiny2d", "--out", str(feats), "--stride", "4"]) == 0
    out = tmp_path / "eval"
    assert main(["eval", "localize", "--features", str(feats), "--annotations",
                 str(untrimmed / "activity_net.v1-3.min.json"), "--temporal-scale", "8", "--num-sample", "4",
                 "--epochs", "1", "--batch-size", "4", "--out", str(out)]) == 0
    (result,) = out.glob("localize-*.json")
    r = json.loads(result.read_text())
    assert r["n_train"] == 8 and r["n_test"] == 4 and len(r["metrics"]["AR"]) == 100
    assert 0 <= r["metrics"]["AUC"] <= 100 and (out / "localize_ar_an.png").is_file()
    assert "| random (feats) |" in capsys.readouterr().out
