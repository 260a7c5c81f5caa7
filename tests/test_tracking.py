"""Tracking protocol (SeCo's SiamFC on frozen features): OTB metrics against hand-computed cases,
GOT-10k / OTB / folder / video readers on small folders, the stride-8 backbone, SiamFC's pieces,
and the command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.cli import main
from vidssl.errors import DataError
from vidssl.eval import track_data
from vidssl.eval.siamfc import (
    FrozenFeatures,
    SiamFCConfig,
    SiamFCHead,
    Tracker,
    balanced_logistic_loss,
    ball_labels,
    crop,
    track,
)
from vidssl.eval.track_data import Sequence, load_sequences, synthetic_sequences
from vidssl.eval.track_metrics import iou, sequence_curves, summarize
from vidssl.models.backbones import Backbone, set_output_stride

# --- metrics -------------------------------------------------------------------------------------


def test_iou_of_hand_drawn_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 10, 10]], dtype=float)
    assert iou(a, b) == pytest.approx([50 / 150, 0.0, 1.0])


def test_an_identical_track_scores_full_precision_and_otbs_auc():
    gt = np.array([[10.0 + t, 20.0, 10.0, 12.0] for t in range(8)])
    m = sequence_curves(gt.copy(), gt, np.ones(8, bool))
    # OTB counts overlap > threshold at 0, 0.05, ..., 1: a perfect track passes 20 of the 21
    assert m["auc"] == pytest.approx(20 / 21) and m["mean_iou"] == pytest.approx(1.0)
    assert m["precision@20"] == 1.0 and m["precision_auc"] == 1.0


def test_a_known_offset_gives_a_known_precision_and_success():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]] * 4)
    half = gt + [5, 0, 0, 0]  # IoU 1/3, centre error 5 px
    m = sequence_curves(half, gt, np.ones(4, bool))
    assert m["auc"] == pytest.approx(7 / 21)  # thresholds 0 .. 0.30 lie below 1/3
    assert m["precision@20"] == 1.0 and m["precision_auc"] == pytest.approx(46 / 51)  # errors <= t for t >= 5
    far = gt + [30, 0, 0, 0]
    m = sequence_curves(far, gt, np.ones(4, bool))
    assert m["auc"] == 0.0 and m["precision@20"] == 0.0 and m["precision_auc"] == pytest.approx(21 / 51)


def test_frames_without_a_box_are_skipped_and_overall_is_the_mean_of_sequences():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]] * 4)
    pred = gt + [[0, 0, 0, 0], [30, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    m = sequence_curves(pred, gt, np.array([True, False, True, True]))
    assert m["frames"] == 3 and m["precision@20"] == 1.0
    other = sequence_curves(gt + [30, 0, 0, 0], gt, np.ones(4, bool))
    overall = summarize({"a": m, "b": other})
    assert overall["precision@20"] == pytest.approx(0.5) and overall["auc"] == pytest.approx(10 / 21)


# --- readers -------------------------------------------------------------------------------------


def _images(folder, n, size=(40, 30), digits=8):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.new("RGB", size, (i * 10 % 255, 0, 0)).save(folder / f"{i:0{digits}d}.jpg")


def test_got10k_split_with_list_absence_and_cut_labels(tmp_path):
    split = tmp_path / "got" / "train"
    for name in ("GOT-10k_Train_000001", "GOT-10k_Train_000002"):
        _images(split / name, 3)
        (split / name / "groundtruth.txt").write_text("1,2,10,12\n3.5,4,10,12\n0,0,0,0\n")
        (split / name / "absence.label").write_text("0\n1\n0\n")
        (split / name / "cut_by_image.label").write_text("0\n0\n1\n")
    (split / "list.txt").write_text("GOT-10k_Train_000001\nGOT-10k_Train_000002\n")
    seqs = load_sequences(tmp_path / "got", "train")
    assert [s.name for s in seqs] == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
    assert seqs[0].boxes[1].tolist() == [3.5, 4, 10, 12]  # 0-based: as written
    assert seqs[0].visible.tolist() == [True, False, False]  # absent; zero size
    assert seqs[0].read(1).shape == (3, 30, 40) and int(seqs[0].read(1)[0, 0, 0]) in range(15, 26)
    (split / "list.txt").write_text("../elsewhere\n")
    with pytest.raises(DataError, match="list.txt:1"):
        load_sequences(split)


def test_otb_separators_two_targets_frame_ranges_and_one_based_boxes(tmp_path, monkeypatch):
    _images(tmp_path / "Basketball" / "img", 3, digits=4)
    (tmp_path / "Basketball" / "groundtruth_rect.txt").write_text("198,214,34,81\n197,214,34,81\n196,213,34,82\n")
    _images(tmp_path / "Car4" / "img", 2, digits=4)
    (tmp_path / "Car4" / "groundtruth_rect.txt").write_text("70\t51\t107\t87\n70 52 107 87\n")
    _images(tmp_path / "Jogging" / "img", 2, digits=4)
    (tmp_path / "Jogging" / "groundtruth_rect.1.txt").write_text("111,98,25,101\n113,97,25,101\n")
    (tmp_path / "Jogging" / "groundtruth_rect.2.txt").write_text("180,79,37,112\n181,79,37,112\n")
    _images(tmp_path / "David" / "img", 8, digits=4)  # boxes for frames 3..6 only
    (tmp_path / "David" / "groundtruth_rect.txt").write_text("1,1,5,5\n2,2,5,5\n3,3,5,5\n4,4,5,5\n")
    monkeypatch.setitem(track_data.OTB_FRAME_RANGES, "David", (3, 6))
    _images(tmp_path / "Board" / "img", 4, digits=5)  # more images than boxes: the first ones
    (tmp_path / "Board" / "groundtruth_rect.txt").write_text("1,1,5,5\n2,2,5,5\n")
    seqs = {s.name: s for s in load_sequences(tmp_path)}
    assert sorted(seqs) == ["Basketball", "Board", "Car4", "David", "Jogging-1", "Jogging-2"]
    assert seqs["Basketball"].boxes[0].tolist() == [197, 213, 34, 81]  # OTB is 1-based
    assert seqs["Car4"].boxes[1].tolist() == [69, 51, 107, 87]  # tab and space separators
    assert seqs["Jogging-2"].boxes[0].tolist() == [179, 78, 37, 112]
    assert int(seqs["David"].read(0)[0, 0, 0]) in range(25, 36) and len(seqs["David"]) == 4  # image 0003
    assert len(seqs["Board"]) == 2


def test_boxes_that_outnumber_the_images_or_are_malformed_name_the_file(tmp_path):
    _images(tmp_path / "seq", 2)
    (tmp_path / "seq" / "boxes.txt").write_text("1,1,5,5\n2,2,5,5\n3,3,5,5\n")
    with pytest.raises(DataError, match="3 boxes but 2 images"):
        load_sequences(tmp_path)
    (tmp_path / "seq" / "boxes.txt").write_text("1,1,5,5\n2,2,five,5\n")
    with pytest.raises(DataError, match=r"boxes.txt:2"):
        load_sequences(tmp_path)
    (tmp_path / "seq" / "boxes.txt").write_text("1,1,5,5\nnan,nan,nan,nan\n")
    seq = load_sequences(tmp_path)[0]
    assert seq.visible.tolist() == [True, False]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no tracking sequences"):
        load_sequences(tmp_path / "empty")


def test_a_video_file_with_its_boxes_file(tmp_path):
    from vidssl.data.encode import write_video

    frames = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    frames[:, 0] = torch.arange(6).view(6, 1, 1) * 40
    write_video(tmp_path / "clip.mp4", frames, codec="libx264", options={"crf": "0"})
    (tmp_path / "clip.txt").write_text("".join(f"{t},2,8,8\n" for t in range(6)))
    (seq,) = load_sequences(tmp_path)
    assert seq.name == "clip" and len(seq) == 6
    assert abs(int(seq.read(4)[0].float().mean()) - 160) < 8


def test_synthetic_boxes_are_the_extent_of_the_target():
    (seq,) = synthetic_sequences(1, frames=6, size=96, seed=3)
    for t in (0, 5):
        x, y, w, h = seq.boxes[t].astype(int)
        frame = seq.read(t).float()
        assert w > 4 and h > 4 and seq.visible[t]
        inside = frame[:, y:y + h, x:x + w]
        assert inside.shape[1:] == (h, w)
    assert synthetic_sequences(1, 6, 96, 3)[0].boxes.tolist() == seq.boxes.tolist()  # deterministic


# --- model ---------------------------------------------------------------------------------------


def test_output_stride_8_keeps_the_weights_and_dilates_the_last_stages():
    net = Backbone("resnet50")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    set_output_stride(net, 8)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert net.net.layer3[1].conv2.dilation == (2, 2) and net.net.layer4[1].conv2.dilation == (4, 4)
    assert net.net.layer2[0].conv2.stride == (2, 2) and net.net.layer4[0].downsample[0].stride == (1, 1)
    assert net.eval().forward_levels(torch.randn(1, 3, 64, 64))["high"].shape[-2:] == (8, 8)
    tiny = set_output_stride(Backbone("tiny2d"), 8).eval()
    assert tiny.forward_levels(torch.randn(1, 3, 127, 127))["high"].shape[-2:] == (16, 16)
    assert tiny.net.layer4.conv1.dilation == (2, 2) and tiny.net.layer3.conv1.dilation == (1, 1)


def test_frozen_features_read_the_stride_8_levels_only():
    from vidssl.eval.encoders import load_encoder

    mid = FrozenFeatures(load_encoder("random:tiny2d"), "mid")
    assert mid.channels == 64 and mid(torch.zeros(1, 3, 63, 63)).shape == (1, 64, 8, 8)
    with pytest.raises(ValueError, match="high or mid"):
        FrozenFeatures(load_encoder("random:tiny2d"), "low")  # tiny2d's low level is at stride 4


def test_crop_copies_pixels_and_fills_outside_with_the_mean_colour():
    image = torch.arange(3 * 20 * 30, dtype=torch.float32).view(3, 20, 30)
    # a 6 px square whose corners fall on pixel edges, at its own size: the pixels themselves
    assert torch.allclose(crop(image, 10.0, 15.0, 6.0, 6), image[:, 7:13, 12:18], atol=1e-3)
    far = crop(image, -100.0, -100.0, 10.0, 4)
    assert torch.allclose(far, image.mean((1, 2), keepdim=True).expand(3, 4, 4), atol=1e-3)


def test_ball_labels_and_the_balanced_logistic_loss_by_hand():
    labels = ball_labels(5, torch.tensor([0.0, 8.0]), torch.tensor([0.0, 0.0]), r_pos=8.0)
    assert labels[0, 0].nonzero().tolist() == [[1, 2], [2, 1], [2, 2], [2, 3], [3, 2]]
    assert labels[1, 0].nonzero().tolist() == [[2, 2], [3, 1], [3, 2], [3, 3], [4, 2]]  # one cell down
    scores = torch.randn(2, 1, 5, 5)
    total = 0.0
    for b in range(2):
        y, s = labels[b, 0].flatten().tolist(), scores[b, 0].flatten().tolist()
        pos = [math.log1p(math.exp(-v)) for v, t in zip(s, y, strict=True) if t == 1]
        neg = [math.log1p(math.exp(v)) for v, t in zip(s, y, strict=True) if t == 0]
        total += 0.5 * sum(pos) / len(pos) + 0.5 * sum(neg) / len(neg)
    assert float(balanced_logistic_loss(scores, labels)) == pytest.approx(total / 2, rel=1e-5)


def test_the_tracker_follows_a_moving_target_on_plain_ground():
    """An untrained head on random features: a bright textured square drifting right and down on
    flat grey is the only structure to match, so a sign or scale error in the tracker's
    displacement would lose it within a few frames."""
    from vidssl.eval.encoders import load_encoder

    size, frames = 96, 10
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    boxes, images = [], []
    for t in range(frames):
        x0, y0 = 20 + 3 * t, 30 + 2 * t
        img = torch.full((3, size, size), 128, dtype=torch.uint8)
        inside = (xx >= x0) & (xx < x0 + 16) & (yy >= y0) & (yy < y0 + 16)
        img[0][inside] = (255 * ((xx + yy) % 4 < 2)).to(torch.uint8)[inside]
        img[1][inside] = 30
        images.append(img)
        boxes.append([x0, y0, 16, 16])
    seq = Sequence("drift", np.array(boxes, float), np.ones(frames, bool), lambda t: images[t])
    torch.manual_seed(0)
    features = FrozenFeatures(load_encoder("random:tiny2d"))
    cfg = SiamFCConfig(exemplar_size=63, instance_size=127)
    head = SiamFCHead(features.channels, 32).eval()
    pred = track(Tracker(features, head, cfg), seq)
    m = sequence_curves(pred, seq.boxes, seq.visible)
    assert m["precision@20"] == 1.0 and float(np.abs(pred[-1, :2] - seq.boxes[-1, :2]).max()) < 6


# --- command -------------------------------------------------------------------------------------


def test_eval_track_end_to_end_with_a_random_reference_row(tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "track", "--encoder", "random:tiny2d:1", "--steps", "3", "--batch-size", "2",
            "--exemplar-size", "31", "--instance-size", "63", "--synthetic-train", "2", "--synthetic-test", "2",
            "--synthetic-frames", "6", "--synthetic-size", "64", "--head-dim", "8", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| random-s1 |" in printed and "| random |" in printed  # the reference row was added
    results = sorted(out.glob("track-*.json"))
    assert len(results) == 2
    r = json.loads(results[0].read_text())
    assert set(r["per_sequence"]) == {"synthetic-0-100000", "synthetic-0-100001"}
    assert len(r["per_sequence"]["synthetic-0-100000"]["boxes"]) == 8 and len(r["overall"]["success"]) == 21
    assert r["protocol"]["instance_size"] == 63 and r["headline"]["AUC"] == r["overall"]["auc"]
    assert "| sequence |" in (out / "track.md").read_text()
    for png in ("track_success.png", "track_precision.png"):
        with Image.open(out / png) as im:
            im.verify()
    assert main(["eval", "track", "--encoder", "random:tiny3d", "--out", str(out)]) == 2
    assert "3D" in capsys.readouterr().err
