from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from vidssl.cli import main
from vidssl.engine.checkpoint import load_checkpoint
from vidssl.engine.config import load_config
from vidssl.engine.export import load_exported
from vidssl.engine.train import train
from vidssl.errors import ConfigError
from vidssl.models.backbones import Backbone

# 40 videos, one clip per recording group: 30 train (3 scenes), 10 test; 3 steps per epoch at batch 8
SMALL = ["data.synthetic_videos=40", "data.synthetic_clips_per_group=1", "data.synthetic_size=32",
         "data.synthetic_frames=16", "data.num_workers=0", "train.batch_size=8", "train.log_every=1",
         "augment.size=24", "seco.queue_size=64", "seco.head_hidden=32"]


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def test_resume_continues_exactly(tmp_path):
    # 40 videos -> 30 train -> 3 steps per epoch: the interruption falls mid-epoch.
    full = load_config(None, SMALL + [f"train.out={tmp_path / 'full'}", "train.max_steps=7", "train.epochs=3"])
    train(full)
    part = load_config(None, SMALL + [f"train.out={tmp_path / 'part'}", "train.max_steps=4", "train.epochs=3"])
    train(part)
    assert load_checkpoint(tmp_path / "part/checkpoint.pt")["step"] == 4
    resumed = load_config(None, SMALL + [f"train.out={tmp_path / 'part'}", "train.max_steps=7"])
    train(resumed, resume=str(tmp_path / "part/checkpoint.pt"))
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(b) == list(range(1, 8))
    for step in range(1, 8):
        assert a[step] == b[step], (step, a[step], b[step])
    sa = load_checkpoint(tmp_path / "full/checkpoint.pt")["model"]
    sb = load_checkpoint(tmp_path / "part/checkpoint.pt")["model"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k  # weights, EMA encoder and queue alike


@pytest.mark.slow
def test_smoke_pretrain_loss_falls(tmp_path):
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.epochs=20", "seco.losses=[inter]",
                                     "optim.warmup_epochs=1", "optim.lr=0.4"])
    train(cfg)
    # The queue starts with random keys (an easy task); it holds real keys from step 3 on
    # (64 slots, 24 keys per step), so compare with the steps after that.
    values = list(losses(tmp_path).values())
    first, last = sum(values[3:9]) / 6, sum(values[-6:]) / 6
    assert last < first - 0.15, (first, last)  # measured: 3.85 -> 3.56


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_export_loads_strictly_into_torchvision(tmp_path, suffix):
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=1", "model.arch=resnet18"])
    train(cfg)
    assert main(["export", str(tmp_path / "checkpoint.pt"), str(tmp_path / f"r18{suffix}")]) == 0
    weights = load_exported(tmp_path / f"r18{suffix}")
    meta = json.loads((tmp_path / "r18.json").read_text())
    assert meta["arch"] == "resnet18" and meta["input_layout"] == "B,C,H,W" and meta["feature_dim"] == 512
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["input_size"] == 24
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()
    model.load_state_dict(weights, strict=True)
    # The exported weights are the trained ones, not a fresh init.
    state = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert torch.equal(weights["conv1.weight"], state["encoders.encoder_q.backbone.net.conv1.weight"])
    model.eval()
    ours = Backbone("resnet18")
    ours.net.load_state_dict(weights)
    ours.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), ours(x), atol=1e-5)


def test_video_backbones_and_levels():
    for arch, shape in (("tiny3d", (2, 3, 4, 32, 32)), ("r3d_18", (1, 3, 4, 32, 32))):
        net = Backbone(arch)
        x = torch.randn(*shape)
        levels = net.forward_levels(x)
        assert list(levels) == ["low", "mid", "high"] and net(x).shape == (shape[0], net.feature_dim)
    with pytest.raises(ValueError, match="takes"):
        Backbone("tiny3d")(torch.randn(2, 3, 32, 32))


def test_config_errors_name_the_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'optim.lrr'"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match=r"command line: unknown key 'train.epoch'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"train.batch_size: expected int"):
        load_config(None, ["train.batch_size=big"])
    bad.write_text("!!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(str(bad))
    assert load_config(None, ["optim.lr=1", "seco.losses=[inter, intra]"]).optim.lr == 1.0
    assert load_config(None, ["optim.weight_decay=1e-6"]).optim.weight_decay == 1e-6  # YAML 1.1 reads a string
    with pytest.raises(ConfigError, match=r"optim.lr: expected float"):
        load_config(None, ["optim.lr=fast"])


def test_builtin_paper_configs_load():
    cfg = load_config("seco_kinetics400")
    assert (cfg.model.arch, cfg.train.batch_size, cfg.seco.queue_size, cfg.optim.lr) == ("resnet50", 512, 131072, 0.2)
    assert cfg.train.epochs == 400 and cfg.optim.warmup_epochs == 5 and cfg.augment.size == 224
    for name in ("seco_ucf101", "seco_laptop", "moco_kinetics400", "moco_laptop"):
        load_config(name)


def test_cli_pretrain_unknown_key_is_one_line(capsys):
    assert main(["pretrain", "--method", "seco", "optim.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'optim.nope'" in err and "Traceback" not in err


def test_moco_baseline_trains(tmp_path):
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=2", "moco.queue_size=64",
                                     "moco.head_hidden=32"], method="moco")
    train(cfg)
    assert len(losses(tmp_path)) == 2


def test_pretrain_on_a_ucf101_layout_with_resume_flag(ucf_dir, tmp_path, capsys):
    args = ["pretrain", "--method", "seco", "--data", str(ucf_dir), "--layout", "ucf101", "--out", str(tmp_path),
            "--resume", *SMALL, "train.max_steps=2", "train.batch_size=4"]
    assert main(args) == 0
    assert "starting from scratch" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert main([*args[:-2], "train.max_steps=3", "train.batch_size=4"]) == 0  # resumes at step 2
    assert sorted(losses(tmp_path)) == [1, 2, 3]


def test_lars_trust_ratio():
    from vidssl.engine.optim import LARS

    w = nn.Parameter(torch.full((2, 2), 3.0))
    w.grad = torch.full((2, 2), 0.5)
    LARS([{"params": [w], "weight_decay": 0.0, "lars": True}], lr=1.0, momentum=0.0, eta=0.1).step()
    # update = lr * eta * ||w|| / ||g|| * g = 0.1 * 6 / 1 * 0.5 = 0.3
    assert torch.allclose(w.detach(), torch.full((2, 2), 2.7))
    b = nn.Parameter(torch.ones(2))
    b.grad = torch.ones(2)
    LARS([{"params": [b], "weight_decay": 0.0, "lars": False}], lr=0.1, momentum=0.0).step()
    assert torch.allclose(b.detach(), torch.full((2,), 0.9))  # plain SGD for biases and norms


def _lars_reference_step(params: list[nn.Parameter], state: dict, lr: float, momentum: float, wd: float,
                         eta: float, lars: bool) -> None:
    """LARS one parameter at a time (You et al. 2017; SimCLR's LARS): what the multi-tensor step must
    equal."""
    with torch.no_grad():
        for p in params:
            if p.grad is None:
                continue
            g = p.grad
            if lars:
                g = g + wd * p
                w_norm, g_norm = p.norm(), g.norm()
                if w_norm > 0 and g_norm > 0:
                    g = g * (eta * w_norm / g_norm)
            if p in state:
                state[p] = momentum * state[p] + g
            else:
                state[p] = g.clone()
            p -= lr * state[p]


def test_lars_matches_the_per_parameter_rule():
    """Three steps with momentum and weight decay, over adapted and plain groups; a zero weight and
    a zero gradient (trust ratio 1); a parameter whose gradient appears only at the second step (its
    momentum buffer starts then, while the others' keep running)."""
    from vidssl.engine.optim import LARS

    torch.manual_seed(0)
    shapes = [(4, 3), (5, 2, 3), (3, 3), (6,), (2, 2), (3, 2)]
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    params[2].data.zero_()  # zero weight
    start = [p.detach().clone() for p in params]
    reference = [nn.Parameter(p.detach().clone()) for p in params]
    groups = [([0, 1, 4], 0.1, True), ([2, 5], 0.0, True), ([3], 0.0, False)]  # indices, weight decay, LARS
    lr, momentum, eta = 0.5, 0.9, 0.02
    optimizer = LARS([{"params": [params[i] for i in idx], "weight_decay": wd, "lars": lars}
                      for idx, wd, lars in groups], lr=lr, momentum=momentum, eta=eta)
    state: dict = {}
    for step in range(3):
        grads = [torch.randn(s) for s in shapes]
        grads[5].zero_()  # zero gradient, no weight decay
        for i, (p, r, g) in enumerate(zip(params, reference, grads, strict=True)):
            late = i == 4 and step == 0
            p.grad, r.grad = (None, None) if late else (g.clone(), g.clone())
        optimizer.step()
        for idx, wd, lars in groups:
            _lars_reference_step([reference[i] for i in idx], state, lr, momentum, wd, eta, lars)
        for p, r in zip(params, reference, strict=True):
            assert torch.allclose(p, r, atol=1e-6), (step, p, r)
    assert all(not torch.equal(p, s) for p, s in zip(params[:5], start[:5], strict=True))


def _nan_on_call(monkeypatch, call: int) -> dict[str, int]:
    import vidssl.methods.seco as seco_module

    real, calls = seco_module.seco_inter_loss, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == call else loss

    monkeypatch.setattr(seco_module, "seco_inter_loss", poisoned)
    return calls


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
    from vidssl.engine.train import TrainingError

    _nan_on_call(monkeypatch, 3)
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=5", "train.ckpt_every=1"])
    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 2 .*checkpoint.pt is intact"):
        train(cfg)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_is_read_one_step_late_and_never_saved(tmp_path, monkeypatch):
    """nan_policy=stop reads a step's loss on the host after the next step's forward and backward
    (no wait between steps on a GPU), and at latest before the next log line or checkpoint."""
    from vidssl.engine.train import TrainingError

    calls = _nan_on_call(monkeypatch, 2)  # step 1; 3 steps per epoch: the first checkpoint is at step 3
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=5", "train.log_every=100",
                                     "train.ckpt_every=100"])
    with pytest.raises(TrainingError, match=r"non-finite loss nan at step 1 "):
        train(cfg)
    assert calls["n"] == 3  # step 2's forward ran before step 1's loss was read
    assert not (tmp_path / "checkpoint.pt").exists()  # nothing written after the non-finite step


def test_non_finite_loss_can_skip_the_step(tmp_path, monkeypatch):
    _nan_on_call(monkeypatch, 2)
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=4", "train.nan_policy=skip"])
    train(cfg)
    assert sorted(losses(tmp_path)) == [1, 3, 4]  # step 2 skipped, not logged
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


def test_a_skipped_last_step_still_checkpoints_and_leaves_no_trace_of_its_batch(tmp_path, monkeypatch):
    """The last step's loss is non-finite: the run still ends with its checkpoint at that step, and
    the queue, momentum encoder and BatchNorm statistics are those after the step before it."""
    before = load_config(None, SMALL + [f"train.out={tmp_path / 'before'}", "train.max_steps=3"])
    train(before)
    _nan_on_call(monkeypatch, 4)
    skipped = load_config(None, SMALL + [f"train.out={tmp_path / 'skipped'}", "train.max_steps=4",
                                         "train.nan_policy=skip", "train.ckpt_every=1000"])
    train(skipped)
    state = load_checkpoint(tmp_path / "skipped/checkpoint.pt")
    assert state["step"] == 4 and sorted(losses(tmp_path / "skipped")) == [1, 2, 3]
    reference = load_checkpoint(tmp_path / "before/checkpoint.pt")["model"]
    for key in ("queue.keys", "queue.ptr", "encoders.encoder_k.heads.inter.0.weight",
                "encoders.encoder_q.backbone.net.bn1.running_mean", "encoders.encoder_q.heads.inter.0.weight"):
        assert torch.equal(state["model"][key], reference[key]), key


def test_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from vidssl.engine import checkpoint as ckpt

    path = tmp_path / "checkpoint.pt"
    ckpt.save_atomic({"model": {"w": torch.ones(3)}, "config": "a: 1\n", "step": 1}, path)

    def crash(obj, fh):
        fh.write(b"partial bytes")
        raise KeyboardInterrupt  # as if the process were stopped mid-write

    monkeypatch.setattr(ckpt.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_atomic({"model": {"w": torch.zeros(3)}, "config": "a: 2\n", "step": 2}, path)
    assert load_checkpoint(path)["step"] == 1 and list(tmp_path.iterdir()) == [path]


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    import pickle

    from vidssl.errors import VidsslError

    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"model": Evil(), "config": ""}, protocol=2))
    with pytest.raises(VidsslError, match="not a loadable vidssl checkpoint"):
        load_checkpoint(bad)


def test_gradient_accumulation_splits_the_global_batch(tmp_path, capsys):
    cfg = load_config(None, SMALL + [f"train.out={tmp_path}", "train.max_steps=2", "train.accumulate=2"])
    train(cfg)
    assert "1 rank(s) x 4 x 2 accumulation" in capsys.readouterr().err
    assert sorted(losses(tmp_path)) == [1, 2]
    with pytest.raises(ConfigError, match="not divisible"):
        from vidssl.engine.train import Plan

        Plan.make(load_config(None, ["train.batch_size=10", "train.accumulate=4"]), 100, 1)


def test_run_sampler_spans_epochs_and_resumes_as_a_suffix():
    from vidssl.engine.train import RunSampler, epoch_indices

    full = list(RunSampler(n=23, seed=3, rank=1, world=2, per_step=4, steps_per_epoch=2, start_step=0, last_step=5))
    expected = [(e, i) for e in range(3) for i in epoch_indices(23, 3, e, 1, 2, 4)][:5 * 4]
    assert full == expected and len(full) == 20
    assert [e for e, _ in full] == [0] * 8 + [1] * 8 + [2] * 4  # every batch lies inside one epoch
    resumed = RunSampler(n=23, seed=3, rank=1, world=2, per_step=4, steps_per_epoch=2, start_step=3, last_step=5)
    assert list(resumed) == full[3 * 4:] and len(resumed) == 8


def test_training_threads_leave_the_cores_to_the_loader_workers(monkeypatch):
    from vidssl.engine import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert threads.training_threads(0, 2) == 6 and threads.training_threads(0, 0) == 8
    assert threads.training_threads(0, 12) == 1  # at least one
    assert threads.training_threads(3, 2) == 3  # train.threads wins
    assert threads.training_threads(-1, 2) is None  # PyTorch's own setting
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this node share its cores
    assert threads.training_threads(0, 2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # set by the user or torchrun: PyTorch's setting stays
    assert threads.training_threads(0, 2) is None and threads.training_threads(2, 2) == 2
    before = torch.get_num_threads()
    with threads.intra_op_threads(1, 0) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before  # restored for whoever called train()
    with pytest.raises(ConfigError, match=r"train.threads: must be >= -1"):
        load_config(None, ["train.threads=-2"])
    with pytest.raises(ConfigError, match=r"train.compile: 'reduce_overhead' is not one of default, reduce-over"):
        load_config(None, ["train.compile=reduce_overhead"])
    with pytest.raises(ConfigError, match=r"train.nan_policy: 'ignore' is not one of stop, skip"):
        load_config(None, ["train.nan_policy=ignore"])


@pytest.mark.slow
def test_compiled_training_matches_eager_and_resumes(tmp_path, monkeypatch, capsys):
    """``train.compile`` compiles the step (here with AOTAutograd's eager backend: dynamo's tracing
    and the autograd split without a C++ compiler); the losses are eager's, the checkpoint's keys
    too, and an eager checkpoint resumes compiled, in the mode the command line gives: with CUDA
    graphs (reduce-overhead), each step first marks its start, so that the next replay may reuse
    the memory of the previous step's outputs."""
    import functools

    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    eager = load_config(None, SMALL + [f"train.out={tmp_path / 'eager'}", "train.max_steps=4"])
    train(eager)
    compiled = load_config(None, SMALL + [f"train.out={tmp_path / 'compiled'}", "train.max_steps=4",
                                          "train.compile=true"])
    counters.clear()
    train(compiled)
    assert counters["stats"]["unique_graphs"] > 0  # the step did go through dynamo
    assert ", compiled" in capsys.readouterr().err
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    sa = load_checkpoint(tmp_path / "eager/checkpoint.pt")["model"]
    sb = load_checkpoint(tmp_path / "compiled/checkpoint.pt")["model"]
    assert sa.keys() == sb.keys()  # no `_orig_mod.` prefix: the method's own state is saved
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-3, atol=1e-5), k
    more = load_config(None, SMALL + [f"train.out={tmp_path / 'eager'}", "train.max_steps=6",
                                      "train.compile=reduce-overhead"])
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    train(more, resume=str(tmp_path / "eager/checkpoint.pt"))
    assert sorted(losses(tmp_path / "eager")) == list(range(1, 7))
    assert len(marks) == 2  # steps 5 and 6
    assert ", compiled (reduce-overhead), resumed at step 4" in capsys.readouterr().err


def test_clip_grad_norm_bounds_the_first_update(tmp_path):
    """SGD's first step moves the parameters by lr x gradient (momentum buffer = gradient, weight
    decay off): clipped to norm c, the update's norm is at most lr x c."""
    import csv

    from vidssl.engine.checkpoint import load_checkpoint
    from vidssl.engine.config import load_config
    from vidssl.engine.train import train

    def run(name: str, *extra: str) -> dict:
        out = train(load_config("seco_laptop", ["data.synthetic_videos=40", "data.synthetic_clips_per_group=2",
                                                "data.num_workers=0", "train.max_steps=1", "train.log_every=1",
                                                "optim.weight_decay=0", f"train.out={tmp_path / name}", *extra]))
        lr = float(next(csv.DictReader(open(out / "metrics.csv")))["lr"])
        return load_checkpoint(out / "checkpoint.pt")["model"], lr

    start, _ = run("frozen", "optim.lr=0")
    clipped, lr = run("clipped", "optim.clip_grad_norm=0.001")
    free, _ = run("free")
    trained = [k for k in start if k.startswith("encoders.encoder_q.") and start[k].is_floating_point()
               and "running" not in k]
    def update_norm(state: dict) -> float:
        return float(torch.stack([(state[k] - start[k]).norm() for k in trained]).norm())
    assert 0 < update_norm(clipped) <= 1.001 * lr * 0.001
    assert update_norm(free) > 10 * lr * 0.001
