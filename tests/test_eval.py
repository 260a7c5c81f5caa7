from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vidssl.cli import main
from vidssl.data.synthetic import MOTIONS
from vidssl.errors import DataError
from vidssl.eval.data import EvalData
from vidssl.eval.encoders import load_encoder
from vidssl.eval.features import FeatureSet, Protocol, extract, spatial_crops
from vidssl.eval.linear import linear_probe, linear_svm
from vidssl.eval.metrics import confusion_matrix, recall_at_k, topk_accuracy
from vidssl.eval.order import order_probe
from vidssl.eval.retrieval import check_groups_disjoint

TINY = EvalData(synthetic_videos=40, synthetic_size=32, synthetic_frames=12, synthetic_clips_per_group=2)
TINY_ARGS = ["--synthetic-videos", "40", "--synthetic-size", "32", "--synthetic-frames", "12",
             "--synthetic-clips-per-group", "2"]


def test_topk_and_confusion_known_answers():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 1, 2])
    assert topk_accuracy(scores, labels, 1) == 0.5  # rows 0 and 2
    assert topk_accuracy(scores, labels, 2) == 0.75  # + row 1 (label 1 second)
    cm = confusion_matrix(scores.argmax(1), labels, 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]


def test_recall_at_k_known_answers():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    g_labels = torch.tensor([0, 1, 2, 3])
    queries = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.2]])
    q_labels = torch.tensor([2, 1, 0])
    # query 0: nearest 0 (label 0), then 2 (label 2): hit at rank 2
    # query 1: nearest 1 (label 1): hit at rank 1; query 2: nearest 3, then 1, 2, 0: hit at rank 4
    metrics, top = recall_at_k(queries, q_labels, gallery, g_labels, ks=(1, 2, 4))
    assert metrics == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@4": pytest.approx(1.0)}
    assert top[0].tolist()[:2] == [0, 2]


def test_svm_and_probe_on_separable_data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 5
    def make(n):  # noqa: E306
        y = torch.arange(n) % 4
        return centres[y] + 0.3 * torch.randn(n, 16, generator=g), y
    (xtr, ytr), (xte, yte) = make(80), make(40)
    r = linear_svm(xtr, ytr, xte, yte, 4)
    assert r.report["top1"] == 1.0 and r.C in (0.01, 0.1, 1.0, 10.0, 100.0) and len(r.cv_scores) == 5
    assert linear_svm(xtr, ytr, xte, yte, 4, C=1.0).C == 1.0
    assert linear_probe(xtr, ytr, xte, yte, 4)["top1"] == 1.0
    # and on labels unrelated to the features it is near chance
    shuffled = ytr[torch.randperm(80, generator=g)]
    assert linear_svm(xtr, shuffled, xte, yte, 4, C=1.0).report["top1"] < 0.6


def test_group_disjointness_guard():
    def fs(groups):
        return FeatureSet(torch.zeros(len(groups), 2), torch.zeros(len(groups), dtype=torch.long), ["x"] * len(groups),
                          groups)
    check_groups_disjoint(fs(["A_g01", "B_g02"]), fs(["A_g03", ""]))
    with pytest.raises(DataError, match="shares 1 recording group"):
        check_groups_disjoint(fs(["A_g01"]), fs(["A_g01", "A_g02"]))


def test_order_probe_reads_time_from_features():
    g = torch.Generator().manual_seed(0)
    def feats(n):  # noqa: E306  "features" whose first half encodes time: learnable arrow and order
        t = torch.randn(n, 8, generator=g)
        fwd = torch.cat([t, torch.linspace(0, 1, 8).expand(n, 8)], 1)
        rev = torch.cat([t, torch.linspace(1, 0, 8).expand(n, 8)], 1)
        a, b = torch.cat([t, torch.zeros(n, 1)], 1), torch.cat([t, torch.ones(n, 1)], 1)
        return {"fwd": fwd, "rev": rev, "a": a, "b": b}
    m = order_probe(feats(30), feats(20))
    assert m == {"arrow": 1.0, "clip_order": 1.0}


def test_three_crops_cover_the_long_side():
    x = torch.arange(10 * 30).view(1, 1, 10, 30).float()
    left, centre, right = spatial_crops(x, 10, 3)
    assert left[..., 0, 0].item() == 0 and right[..., 0, -1].item() == 29 and centre[..., 0, 0].item() == 10


def test_features_are_cached_and_reused(tmp_path):
    enc = load_encoder("random:tiny2d")
    p = Protocol("frames", 4, crop=24)
    a = extract(enc, TINY, "test", p, cache_dir=tmp_path)
    assert a.cache_file and len(list(tmp_path.glob("*.pt"))) == 1
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["encoder"] == "random-tiny2d-0" and manifest["protocol"]["num"] == 4
    b = extract(enc, TINY, "test", p, cache_dir=tmp_path)
    assert torch.equal(a.features, b.features) and b.cache_file == a.cache_file
    extract(enc, TINY, "test", Protocol("frames", 5, crop=24), cache_dir=tmp_path)  # new protocol, new entry
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_clip_protocol_with_3d_backbone(tmp_path):
    enc = load_encoder("random:tiny3d")
    fs = extract(enc, TINY, "test", Protocol("clips", 3, clip_len=4, crops=3, crop=24))
    assert fs.features.shape == (len(fs.paths), 128) and torch.isfinite(fs.features).all()


def test_eval_commands_and_report(tmp_path, capsys):
    out = tmp_path / "eval"
    common = ["--encoder", "random:tiny2d", "--encoder", "random:tiny2d:1", *TINY_ARGS, "--out", str(out), "--num", "4"]
    assert main(["eval", "linear", *common, "--classifier", "both"]) == 0
    printed = capsys.readouterr().out
    assert "| random |" in printed and "| random-s1 |" in printed and "svm top1" in printed
    assert main(["eval", "retrieval", *common]) == 0
    assert "R@1" in capsys.readouterr().out
    assert main(["eval", "knn", *common, "--k", "1,5"]) == 0
    assert "k=5 top1" in capsys.readouterr().out
    assert main(["eval", "order", "--encoder", "random:tiny2d", *TINY_ARGS, "--out", str(out), "--frames", "4"]) == 0
    results = list(out.glob("*.json"))
    assert len(results) == 11  # 2 encoders x (svm, probe, retrieval, kNN k=1, kNN k=5) + order
    knn1 = [json.loads(f.read_text()) for f in out.glob("knn-random-2*.json")]
    assert sorted(d["k"] for d in knn1) == [1, 5] and all(d["temperature"] == 0.07 for d in knn1)
    svm = [d for f in out.glob("linear-random-2*.json") if "C" in (d := json.loads(f.read_text()))]
    assert len(svm) == 1 and svm[0]["protocol"]["num"] == 4 and svm[0]["encoder"]["fingerprint"] == "random-tiny2d-0"
    assert svm[0]["C_selection"] == "3-fold CV on train" and len(svm[0]["metrics"]["confusion"]) == 10
    table = (out / "results.md").read_text()
    assert table.count("\n") >= 2 + 2 * 4 and "| retrieval |" in table and "| knn |" in table
    assert main(["report", str(out)]) == 0
    pngs = sorted((out / "report").glob("*.png"))
    kinds = {p.stem.split("-")[-1] for p in pngs}
    assert {"confusion", "grid", "embedding"} <= kinds
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
            assert im.size[0] > 100


def test_eval_threads_beside_workers(monkeypatch, capsys):
    """``--threads`` N runs the command on N intra-op threads; 0 takes the cores the ``--workers``
    leave; either way the previous number comes back after. Below -1 is refused, naming the flag."""
    from vidssl.eval import cli as eval_cli

    seen = []
    monkeypatch.setattr(eval_cli, "cmd_order", lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.setattr("vidssl.engine.threads.available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    assert main(["eval", "order", "--encoder", "random:tiny2d", "--threads", "1"]) == 0
    assert main(["eval", "order", "--encoder", "random:tiny2d", "--workers", "3"]) == 0  # 4 cores - 3 workers
    assert seen == [1, 1] and torch.get_num_threads() == before
    assert main(["eval", "order", "--encoder", "random:tiny2d", "--workers", "1", "--threads", "0"]) == 0
    assert seen[-1] == 3
    with pytest.raises(SystemExit):
        main(["eval", "order", "--encoder", "random:tiny2d", "--threads", "-2"])
    assert "--threads" in capsys.readouterr().err


def test_eval_refuses_unlabeled_data(tmp_path, video_files, capsys):
    import shutil

    for name in ("a", "b"):
        shutil.copy(video_files["h264_short_gop"], tmp_path / f"{name}.mp4")
    (tmp_path / "train.txt").write_text("a.mp4\n")
    (tmp_path / "test.txt").write_text("b.mp4\n")
    rc = main(["eval", "linear", "--encoder", "random:tiny2d", "--data", str(tmp_path / "train.txt"),
               "--test-data", str(tmp_path / "test.txt"), "--out", str(tmp_path / "o"), "--num", "2"])
    assert rc == 2 and "needs labels" in capsys.readouterr().err


def test_finetune_averages_several_clips(tmp_path):
    from vidssl.eval.finetune import FinetuneRecipe, finetune

    enc = load_encoder("random:tiny2d", default_size=24)
    m = finetune(enc, TINY, FinetuneRecipe(segments=2, epochs=2, batch_size=4, test_views=3))
    assert 0.0 <= m["top1"] <= 1.0 and m["recipe"]["test_views"] == 3 and len(m["confusion"]) == 10


def test_mirror_classes_swap_direction_words():
    from vidssl.eval.finetune import mirror_classes

    assert mirror_classes(list(MOTIONS)).tolist() == [1, 0, 2, 3, 4, 5, 7, 6, 8, 9]
    ssv2 = ["Pushing something from left to right", "Pushing something from right to left", "Putting something upright",
            "Turning something clockwise", "Turning something counterclockwise", "Moving something left"]
    assert mirror_classes(ssv2).tolist() == [1, 0, 2, 4, 3, -1]  # "upright" has no direction; no partner: -1


def test_a_mirrored_sample_is_the_flipped_frames_with_the_mirror_label():
    from vidssl.eval.finetune import mirror_batch

    views = [torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)]
    labels, mirror_of = torch.tensor([0, 2]), torch.tensor([1, 0, -1])
    seen = set()
    for seed in range(20):
        out, new = mirror_batch(views, labels, mirror_of, torch.Generator().manual_seed(seed))
        assert new[1] == 2 and torch.equal(out[0][1], views[0][1])  # a class without partner is never flipped
        flipped = bool(new[0] == 1)
        assert torch.equal(out[0][0], views[0][0].flip(-1) if flipped else views[0][0])
        seen.add(flipped)
    assert seen == {True, False}


def test_finetune_with_label_swapped_flip_runs(capsys, tmp_path):
    assert main(["eval", "finetune", "--encoder", "random:tiny2d", "--synthetic-videos", "40", "--synthetic-size", "32",
                 "--synthetic-frames", "12", "--epochs", "1", "--flip", "swap",
                 "--out", str(tmp_path)]) == 0
    result = json.loads(next(tmp_path.glob("finetune-*.json")).read_text())
    assert result["metrics"]["recipe"]["mirror"] is True and "label-swapped flip" in result["recipe_text"]


def test_linear_and_retrieval_on_a_ucf101_layout(ucf_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    common = ["--encoder", "random:tiny2d", "--data", str(ucf_dir), "--layout", "ucf101", "--split", "1",
              "--out", str(out), "--num", "3", "--crop", "24"]
    assert main(["eval", "linear", *common]) == 0 and main(["eval", "retrieval", *common]) == 0
    res = json.loads(next(out.glob("retrieval-*.json")).read_text())
    assert "ucf101, split 1" in res["data"] and res["n_test"] > 0 and res["n_train"] > 0


def test_label_subset_keeps_each_class_share_and_at_least_one_video():
    from vidssl.eval.finetune import label_subset

    labels = [0] * 200 + [1] * 50 + [2] * 3
    picked = label_subset(labels, 0.1, seed=0)
    counts = [sum(labels[i] == c for i in picked) for c in range(3)]
    assert counts == [20, 5, 1]  # round(10% of 200, 50, 3), and class 2 keeps one video
    assert picked == sorted(set(picked))  # no repeats
    assert label_subset(labels, 0.1, seed=0) == picked  # the seed decides the draw
    assert label_subset(labels, 0.1, seed=1) != picked
    assert label_subset(labels, 1.0, seed=3) == list(range(len(labels)))
    assert [labels[i] for i in label_subset(labels, 0.01, seed=0)] == [0, 0, 1, 2]


def test_finetune_on_a_label_fraction_records_and_writes_its_subset(capsys, tmp_path):
    args = ["eval", "finetune", "--encoder", "random:tiny2d", *TINY_ARGS, "--epochs", "1", "--out", str(tmp_path),
            "--label-fraction", "0.1", "--subset-seed", "3", "--recipe", "corp", "--test-views", "2"]
    assert main(args) == 0
    result = json.loads(next(tmp_path.glob("finetune-*.json")).read_text())
    train, _ = TINY.load("train")
    assert result["label_fraction"] == 0.1 and result["subset_seed"] == 3 and result["recipe_name"] == "corp"
    lines = (tmp_path / result["subset_file"]).read_text().splitlines()
    assert len(lines) == result["subset_size"] == len(train.class_names)  # 3 per class -> round(0.3) -> 1 each
    label_of = {r.path: r.label for r in train.records}
    assert sorted(int(y) for _, y in (ln.rsplit(" ", 1) for ln in lines)) == list(range(len(train.class_names)))
    assert all(label_of[p] == int(y) for p, y in (ln.rsplit(" ", 1) for ln in lines))
    recipe = result["metrics"]["recipe"]
    assert recipe["segments"] == 1 and recipe["weight_decay"] == 0 and recipe["test_crops"] == 3
    assert recipe["lr"] == pytest.approx(0.2 * 16 / 1024)
    assert main([*args[:-2], "--label-fraction", "0"]) == 2
    assert "--label-fraction must be in (0, 1]" in capsys.readouterr().err
