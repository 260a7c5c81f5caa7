"""Real two-process gloo DDP runs (launched in subprocesses with torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent


def torchrun(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    torchrun([str(HERE / "ddp_worker.py"), str(out)], cwd=out)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_both_ranks_hold_the_same_queue_of_both_ranks_keys(ranks):
    q0, q1 = torch.tensor(ranks[0]["queue"]), torch.tensor(ranks[1]["queue"])
    assert torch.equal(q0, q1)
    expected = torch.tensor(ranks[0]["expected_head"])
    assert expected.shape == (24, 8)  # 3 key views x 4 samples x 2 ranks
    assert torch.allclose(q0[:24], expected)
    assert ranks[0]["ptr"] == ranks[1]["ptr"] == 24
    # the two ranks' keys differ (different data), so the queue really holds both
    assert not torch.allclose(expected[:12], expected[12:])


def test_vclr_second_queue_holds_both_ranks_video_keys(ranks):
    v0, v1 = torch.tensor(ranks[0]["video_queue"]), torch.tensor(ranks[1]["video_queue"])
    assert torch.equal(v0, v1) and torch.equal(torch.tensor(ranks[0]["frame_queue"]),
                                               torch.tensor(ranks[1]["frame_queue"]))
    expected = torch.tensor(ranks[0]["video_expected_head"])
    assert expected.shape == (8, 8) and torch.allclose(v0[:8], expected)
    assert not torch.allclose(expected[:4], expected[4:])
    assert ranks[0]["vclr_grad_sum"] == ranks[1]["vclr_grad_sum"]  # DDP averaged the gradients


def test_corp_negatives_are_gathered_across_ranks(ranks):
    assert abs(ranks[0]["corp_mean_loss"] - ranks[0]["corp_union_loss"]) < 1e-4
    assert ranks[0]["corp_union_loss"] == pytest.approx(ranks[1]["corp_union_loss"], rel=1e-6)
    # without the gather a rank sees only its own 2B-1 candidates: fewer negatives, a lower loss
    for r in ranks:
        assert r["corp_nogather_loss"] < r["corp_local_loss"] - 0.1


def test_mlfo_gathers_negatives_codes_graph_and_queue_across_ranks(ranks):
    r0, r1 = ranks
    assert {"ins", "sem", "mul_low", "mul_mid", "mul_high", "aug_low", "aug_mid", "ret_low"} == set(r0["mlfo_parts"])
    assert r0["mlfo_mean_loss"] == pytest.approx(r0["mlfo_union_loss"], abs=1e-4)
    assert r0["mlfo_union_loss"] == pytest.approx(r1["mlfo_union_loss"], rel=1e-6)
    assert all(abs(r["mlfo_nogather_loss"] - r["mlfo_local_loss"]) > 1e-3 for r in ranks)
    assert r0["mlfo_queue"] == r1["mlfo_queue"]  # both ranks queued both ranks' scores


def test_gradients_are_synchronised(ranks):
    assert ranks[0]["params"] == ranks[1]["params"]
    assert ranks[0]["param_sum"] == ranks[1]["param_sum"]


def test_gathers(ranks):
    assert ranks[0]["gathered"] == [[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 3
    # gradient of sum_r (r + 1) * sum(gather(x)) w.r.t. each rank's x is 1 + 2 = 3
    assert ranks[0]["grad_x"] == ranks[1]["grad_x"] == [[3.0] * 3] * 2


def test_shuffle_bn_across_ranks(ranks):
    for r in ranks:
        assert r["sbn_eval_err"] < 1e-5  # eval mode: identical to the plain computation
        assert r["sbn_train_err"] < 1e-5  # train mode: this rank's slice of the shuffled batch


@pytest.mark.parametrize("method", ["seco", "moco", "vclr", "corp_f", "corp_m", "simclr"])
def test_documented_torchrun_pretrain_command(tmp_path, method):
    run = tmp_path / "run"
    res = torchrun(["-m", "vidssl.cli", "pretrain", "--method", method, "--out", str(run),
                    "data.synthetic_videos=40", "data.synthetic_size=32", "data.synthetic_frames=16",
                    "data.num_workers=0", "train.batch_size=8", "train.max_steps=3", "train.log_every=1"],
                   cwd=tmp_path)
    assert (run / "checkpoint.pt").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "2 rank(s) x 4" in res.stderr


def test_sync_bn_converts_every_batch_norm_on_cuda_ranks_and_keeps_the_checkpoint_keys():
    from torch import nn

    from vidssl.engine.config import load_config
    from vidssl.engine.distributed import DistContext
    from vidssl.engine.train import build_method, sync_batch_norm

    cfg = load_config(None, [], "corp_f")
    method, _ = build_method(cfg, distributed=True)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    cpu = sync_batch_norm(method, DistContext(0, 2, 0, torch.device("cpu")))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in cpu.modules())  # PyTorch's runs on GPUs only
    converted = sync_batch_norm(method, DistContext(0, 2, 0, torch.device("cuda", 0)))  # converting needs no GPU
    norms = [m for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert len([m for m in converted.backbone.modules() if isinstance(m, nn.SyncBatchNorm)]) > 0
    after = converted.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_sync_bn_on_cpu_ranks_trains_with_per_rank_statistics_and_says_so(tmp_path):
    run = tmp_path / "run"
    res = torchrun(["-m", "vidssl.cli", "pretrain", "--method", "corp_f", "--out", str(run), "model.sync_bn=true",
                    "data.synthetic_videos=40", "data.synthetic_size=32", "data.synthetic_frames=16",
                    "data.num_workers=0", "train.batch_size=8", "train.max_steps=2"], cwd=tmp_path)
    assert (run / "checkpoint.pt").is_file() and "SyncBatchNorm runs only on CUDA devices" in res.stderr


def test_finetune_under_torchrun_splits_the_batch_and_scores_every_test_video_once(tmp_path):
    out = tmp_path / "eval"
    torchrun(["-m", "vidssl.cli", "eval", "finetune", "--encoder", "random:tiny2d", "--synthetic-videos", "40",
              "--synthetic-size", "32", "--synthetic-frames", "12", "--epochs", "2", "--batch-size", "4",
              "--label-fraction", "0.5", "--test-views", "2", "--out", str(out)], cwd=tmp_path)
    results = list(out.glob("finetune-*.json"))
    assert len(results) == 1  # rank 0 writes
    r = json.loads(results[0].read_text())
    assert r["metrics"]["world_size"] == 2 and r["subset_size"] == 10  # half of 20 train videos, 1 per class
    confusion = torch.tensor(r["metrics"]["confusion"])
    assert (confusion.sum(1) == 2).all()  # the 20 test videos, 2 per class, each scored once by one rank


def test_extract_under_torchrun_splits_the_videos_and_merges_the_manifests(tmp_path):
    from vidssl.data.untrimmed import UntrimmedVideos

    UntrimmedVideos(num_videos=6, size=32, frames=48).write_activitynet(tmp_path / "anet")
    res = torchrun(["-m", "vidssl.cli", "extract", str(tmp_path / "anet"), "--encoder", "random:tiny2d",
                    "--out", str(tmp_path / "feats"), "--stride", "8", "--device", "cpu"], cwd=tmp_path)
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert len(manifest["videos"]) == 6 and len(list((tmp_path / "feats").glob("*.npy"))) == 6
    assert res.stdout.count("videos' features") == 1  # rank 0 reports


@pytest.mark.slow
def test_mlfo_pretrains_under_torchrun_across_its_stages(tmp_path):
    """Stage one leaves the prototypes (frozen) and the lower-level heads (no graph loss yet)
    without gradient; DDP must accept that and the run must go on into stage two."""
    run = tmp_path / "run"
    torchrun(["-m", "vidssl.cli", "pretrain", "--method", "mlfo", "--out", str(run),
              "data.synthetic_videos=40", "data.synthetic_clips_per_group=8", "data.synthetic_frames=32",
              "data.num_workers=0", "train.batch_size=8", "train.epochs=2", "train.log_every=1", "mlfo.graph_start=0.5",
              "mlfo.clip_len=4", "mlfo.retrieval_levels=[low]"], cwd=tmp_path)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 10  # 40 videos (one group per class: no test split) / 8 = 5 steps per epoch
    assert "mul_low" not in rows[4] and "mul_low" in rows[5]


@pytest.mark.slow
def test_a_dying_rank_stops_the_others_with_a_clear_error(tmp_path):
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29600 + os.getpid() % 1000), str(HERE / "ddp_rank_dies.py"),
           f"train.out={tmp_path}", "data.synthetic_videos=40", "data.synthetic_size=32",
           "data.synthetic_frames=16", "data.num_workers=0", "train.batch_size=8", "train.max_steps=20",
           "data.synthetic_clips_per_group=3", "seco.queue_size=32"]
    start = time.time()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.time() - start
    assert res.returncode != 0 and elapsed < 120
    out = res.stdout + res.stderr
    assert "exitcode  : 17" in out or "exit code 17" in out or "exitcode: 17" in out, out[-2000:]
