"""Hostile input, round two: list/CSV/JSON parsers, config values, checkpoints and disk errors.
Every case answers with a problem naming file and line, or ``vidssl: error: ...`` and exit 2, never a
traceback; no list path leaves the dataset root, no checkpoint is overwritten or saved non-finite."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest
import torch

from vidssl.cli import main
from vidssl.data.index import VideoIndex
from vidssl.data.sources import load_source, parse_path_list, read_class_names
from vidssl.engine.checkpoint import load_checkpoint, save_atomic
from vidssl.errors import DataError

SMALL = ["data.synthetic_videos=40", "data.synthetic_size=32", "data.synthetic_frames=16", "data.num_workers=0",
         "train.batch_size=8", "augment.size=24", "seco.queue_size=64", "seco.head_hidden=32"]


def touch(path: Path, payload: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def reasons(source) -> list[str]:
    return [f"{p.where}: {p.reason}" for p in source.problems]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# ----- paths stay inside the root; symlinks the user made are followed ----------------------------
def test_kinetics_csv_paths_cannot_leave_the_root(tmp_path):
    root = tmp_path / "k400"
    touch(root / "abseiling/AAA_000010_000020.mp4")
    touch(tmp_path / "outside/zzz_000001_000002.mp4")
    touch(tmp_path / "outside/BBB_000001_000002.mp4")
    (root / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,AAA,10,20,train\n"
        "../outside,BBB,1,2,train\nabseiling,../../outside/zzz,1,2,train\n"
        f"{tmp_path / 'outside'},BBB,1,2,train\n..,outside/BBB,1,2,train\n")
    src = load_source(root / "train.csv")
    assert [Path(r.path).name for r in src.records] == ["AAA_000010_000020.mp4"]
    assert all(Path(r.path).is_relative_to(root) for r in src.records)
    assert [p.where.rsplit(":", 1)[1] for p in src.problems] == ["3", "4", "5", "6"]
    assert src.class_names == ["abseiling"]


@pytest.mark.parametrize("rel", ["../outside.mp4", "a/../../outside.mp4", "/etc/passwd", "a/b/../../../outside.mp4"])
def test_list_paths_with_dot_dot_or_absolute_are_refused(tmp_path, rel):
    touch(tmp_path / "outside.mp4")
    (tmp_path / "data").mkdir()
    (tmp_path / "data/list.txt").write_text(f"{rel} 0\n")
    src = parse_path_list(tmp_path / "data/list.txt")
    assert not src.records and "outside the dataset root" in reasons(src)[0] and "list.txt:1" in reasons(src)[0]


def test_symlinked_video_folders_and_entries_are_followed_in_every_layout(tmp_path, ucf_dir):
    elsewhere = tmp_path / "other_disk"
    elsewhere.mkdir()
    root = tmp_path / "ucf"
    root.mkdir()
    os.symlink(ucf_dir, root / "UCF-101")  # the videos on another disk
    for f in ucf_dir.glob("*.txt"):
        (root / f.name).write_bytes(f.read_bytes())
    src = load_source(root, "ucf101")
    assert src.records and not src.problems
    # a path-list entry that is a symlink is accepted as the folder layout accepts it
    real = touch(elsewhere / "clip.mp4")
    os.symlink(real, root / "link.mp4")
    (root / "list.txt").write_text("link.mp4 0\n")
    listed = parse_path_list(root / "list.txt")
    assert [Path(r.path).name for r in listed.records] == ["link.mp4"] and not listed.problems
    assert "link.mp4" in {Path(r.path).name for r in load_source(root, "folder").records}


def test_a_symlink_loop_in_a_list_is_a_problem(tmp_path):
    os.symlink(tmp_path / "b.mp4", tmp_path / "a.mp4")
    os.symlink(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "list.txt").write_text("a.mp4 0\n")
    src = parse_path_list(tmp_path / "list.txt")
    assert not src.records and "list.txt:1: missing file 'a.mp4'" in reasons(src)[0]


# ----- labels are validated and bounded ---------------------------------------------------------
def test_a_huge_label_is_refused_without_allocating(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "frames/f1/img_00001.jpg")
    (tmp_path / "list.txt").write_text("a.mp4 999999999999\na.mp4 1\n")
    (tmp_path / "frames.txt").write_text("frames/f1 1 999999999999\n")
    start = time.perf_counter()
    src = parse_path_list(tmp_path / "list.txt")
    frames = load_source(tmp_path / "frames.txt", "frame_list")
    assert time.perf_counter() - start < 1.0  # no class list of 10^12 names
    assert src.class_names == ["0", "1"] and "list.txt:1: label 999999999999 outside" in reasons(src)[0]
    assert not frames.records and "frames.txt:1" in reasons(frames)[0]


@pytest.mark.parametrize("label", ["²", "٣", "-1", "1.0"])
def test_labels_must_be_ascii_digits(tmp_path, label):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "frames/f1/img_00001.jpg")
    (tmp_path / "frames.txt").write_text(f"frames/f1 1 {label}\n")
    src = load_source(tmp_path / "frames.txt", "frame_list")
    assert not src.records and "frames.txt:1" in reasons(src)[0]


# ----- every parser names file and line ------------------------------------------------------------
def _ssv2(root: Path, labels: object, train: object) -> Path:
    touch(root / "1.webm")
    (root / "labels.json").write_text(json.dumps(labels))
    (root / "train.json").write_text(json.dumps(train))
    return root


@pytest.mark.parametrize("labels,train,message", [
    ({"Pushing something": 0}, [{"id": None, "template": "Pushing [something]"}], "train.json[0]: entry without"),
    ({"Pushing something": 0}, [{"id": "1", "template": 5}], "train.json[0]: unknown class template 5"),
    ({"Pushing something": 0}, [["1", "Pushing [something]"]], "train.json[0]: entry without"),
])
def test_ssv2_entries_of_the_wrong_type_are_problems(tmp_path, labels, train, message):
    src = load_source(_ssv2(tmp_path, labels, train), "ssv2")
    assert not src.records and message in reasons(src)[0]


@pytest.mark.parametrize("labels,train,message", [
    ({"A": 0, "B": 0}, [], "templates 'A' and 'B' share id 0"),
    (["A", "B"], [], "expected a mapping of template -> id"),
    ({"A": "x"}, [], "template 'A' has id 'x'"),
    ({"A": 0}, {"id": "1"}, "expected a list of videos"),
])
def test_ssv2_label_files_of_the_wrong_shape_are_errors(tmp_path, labels, train, message):
    with pytest.raises(DataError, match=message):
        load_source(_ssv2(tmp_path, labels, train), "ssv2")


@pytest.mark.parametrize("row,message", [
    ("abseiling,AAA,inf,20,train", "outside [0, 1e6) seconds"),
    ("abseiling,AAA,nan,20,train", "outside [0, 1e6) seconds"),
    ("abseiling,AAA", "a short row"),
    ("abseiling,AAA,x,20,train", "bad time_start/time_end"),
])
def test_kinetics_csv_bad_rows_are_problems(tmp_path, row, message):
    (tmp_path / "train.csv").write_text(f"label,youtube_id,time_start,time_end,split\n{row}\n")
    src = load_source(tmp_path / "train.csv")
    assert not src.records and reasons(src)[0].split("train.csv:2: ")[1].endswith(message) or message in reasons(src)[0]
    assert "train.csv:2: " in reasons(src)[0]


def test_non_utf8_and_unreadable_list_files_are_errors(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"label,youtube_id,time_start,time_end\n\xff\xfe,AAA,1,2\n")
    with pytest.raises(DataError, match="train.csv: not a UTF-8 text file"):
        load_source(tmp_path / "train.csv")
    (tmp_path / "list.txt").mkdir()  # reading it fails as an unreadable file does
    with pytest.raises(DataError, match="list.txt: file not found"):
        parse_path_list(tmp_path / "list.txt")


def test_ucf101_file_names_with_spaces_and_duplicate_classes(tmp_path):
    touch(tmp_path / "UCF-101/Jump/v_Jump_g01 c01.avi")
    (tmp_path / "classInd.txt").write_text("1 Jump\n2 Run\n")
    (tmp_path / "trainlist01.txt").write_text("Jump/v_Jump_g01 c01.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("Jump/v_Jump_g01 c01.avi\n")
    for subset in ("train", "test"):
        src = load_source(tmp_path, "ucf101", subset=subset)
        assert [r.label for r in src.records] == [0] and not src.problems
    (tmp_path / "classInd.txt").write_text("1 Jump\n2 Jump\n")
    with pytest.raises(DataError, match=r"classInd.txt:2: class 'Jump' is already line 1's"):
        load_source(tmp_path, "ucf101")
    (tmp_path / "classes.txt").write_text("run\nwalk\nrun\n")
    with pytest.raises(DataError, match="classes.txt:3: class 'run'"):
        read_class_names(tmp_path / "classes.txt")


def test_a_frame_list_naming_a_video_file_is_a_problem(tmp_path):
    touch(tmp_path / "a.mp4")
    (tmp_path / "frames.txt").write_text("a.mp4 10 0\n")
    src = load_source(tmp_path / "frames.txt", "frame_list")
    assert not src.records and "frames.txt:1: 'a.mp4' is not a frame folder" in reasons(src)[0]


@pytest.mark.parametrize("payload", [b"\xff\xfe\x00", b"[1, 2]", b'{"videos": {"a": {"num_frames": "x"}}}',
                                     b'{"videos": {"a": [1]}}', b'{"videos": {"a": {"num_frames": 1e999}}}'])
def test_a_corrupt_index_file_is_rebuilt(tmp_path, payload):
    (tmp_path / "index.json").write_bytes(payload)
    index = VideoIndex(tmp_path / "index.json")
    assert len(index) == 0 and index.dirty


def test_data_check_of_an_empty_folder_exits_1(tmp_path, capsys):
    code, out = run_cli(["data", "check", str(tmp_path)], capsys)
    assert code == 1 and "nothing to check" in out and "Traceback" not in out


# ----- configs are range-checked before training -----------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("train.batch_size=0", "train.batch_size"), ("train.ckpt_every=0", "train.ckpt_every"),
    ("train.log_every=0", "train.log_every"), ("optim.lr=-0.1", "optim.lr"), ("optim.lr=.nan", "optim.lr"),
    ("data.num_workers=-1", "data.num_workers"), ("data.backend=ffmpeg", "data.backend"),
    ("data.short_videos=pad", "data.short_videos"), ("train.epochs=0", "train.epochs"),
    ("train.seed=99999999999999999999999", "train.seed"), ("augment.scale=[0.9,0.1]", "augment.scale"),
    ("augment.p_flip=2", "augment.p_flip"), ("optim.name=rmsprop", "optim.name"),
])
def test_out_of_range_config_values_name_the_key(tmp_path, capsys, override, key):
    code, out = run_cli(["pretrain", "--method", "seco", "--out", str(tmp_path / "run"), override], capsys)
    assert code == 2 and f"vidssl: error: {key}" in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()


# ----- checkpoints: never overwritten, never non-finite, damaged ones are errors ------------------
@pytest.fixture(scope="module")
def seco_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("seco")
    assert main(["pretrain", "--method", "seco", "--out", str(run), *SMALL, "train.max_steps=2"]) == 0
    return run


def test_export_never_overwrites_a_checkpoint(seco_run, tmp_path, capsys):
    ckpt = seco_run / "checkpoint.pt"
    before = ckpt.read_bytes()
    code, out = run_cli(["export", str(ckpt), str(ckpt)], capsys)
    assert code == 2 and "refusing to overwrite" in out and ckpt.read_bytes() == before
    # an export named like the checkpoint beside it does not change how the checkpoint loads
    work = tmp_path / "run"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(before)
    assert main(["export", str(work / "checkpoint.pt"), str(work / "checkpoint.safetensors")]) == 0
    from vidssl.eval.encoders import load_encoder

    assert load_encoder(str(work / "checkpoint.pt")).name == "seco"
    assert load_encoder(str(work / "checkpoint.safetensors")).name == "seco"
    assert main(["export", str(work / "checkpoint.pt"), str(work / "checkpoint.safetensors")]) == 0  # re-export


def test_resume_refuses_changes_it_cannot_make_and_applies_those_it_can(seco_run, tmp_path, capsys):
    ckpt = str(seco_run / "checkpoint.pt")
    code, out = run_cli(["pretrain", "--method", "simclr", "--resume", ckpt, "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "cannot change on resume: method ('seco' in the checkpoint, 'simclr' asked)" in out
    code, out = run_cli(["pretrain", "--resume", ckpt, "--out", str(tmp_path / "b"), "train.batch_size=4",
                         "optim.lr=0.5"], capsys)
    assert code == 2 and "optim.lr (0.1 in the checkpoint, 0.5 asked)" in out and "train.batch_size (8" in out
    code, out = run_cli(["pretrain", "--resume", ckpt, "--out", str(tmp_path / "c"), "train.max_steps=3",
                         "train.log_every=1"], capsys)
    assert code == 0 and "resumed at step 2" in out
    assert load_checkpoint(tmp_path / "c/checkpoint.pt")["step"] == 3


def test_a_checkpoint_is_only_written_from_finite_weights(tmp_path, capsys, monkeypatch):
    real_step = torch.optim.SGD.step
    calls = {"n": 0}

    def poisoning_step(self, *args, **kwargs):  # a finite loss, then a non-finite update at step 3
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoning_step)
    run = tmp_path / "run"
    code, out = run_cli(["pretrain", "--method", "seco", "--out", str(run), *SMALL, "train.max_steps=5",
                         "train.ckpt_every=1", "optim.name=sgd"], capsys)
    assert code == 2 and f"the last good checkpoint {run / 'checkpoint.pt'} is intact" in out
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 2 and all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def _damaged(seco_run: Path, tmp_path: Path, edit) -> Path:
    state = torch.load(seco_run / "checkpoint.pt", weights_only=True)
    edit(state)
    torch.save(state, tmp_path / "damaged.pt")
    return tmp_path / "damaged.pt"


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update(config=[1, 2]), "not a mapping of keys"),
    (lambda s: s.update(model=dict(list(s["model"].items())[::2])), "missing"),
    (lambda s: s.update(config=s["config"].replace("method: seco", "method: moco")), "its weights do not fit MoCo"),
    (lambda s: s.pop("step"), "'step' is None"),
    (lambda s: s.pop("rng"), "no optimizer or RNG state"),
])
def test_damaged_checkpoints_are_errors(seco_run, tmp_path, capsys, edit, message):
    path = _damaged(seco_run, tmp_path, edit)
    code, out = run_cli(["pretrain", "--resume", str(path), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and message in out and "Traceback" not in out


def test_a_malicious_pt_export_is_refused_with_an_error(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"conv.weight": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "evil.json").write_text(json.dumps({"format": "vidssl-backbone/1", "arch": "tiny2d",
                                                    "weights": "evil.pt", "mean": [0, 0, 0], "std": [1, 1, 1],
                                                    "input_size": 32}))
    code, out = run_cli(["eval", "linear", "--encoder", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "e")],
                        capsys)
    assert code == 2 and "not loadable exported weights" in out and not (tmp_path / "pwned").exists()


def test_disk_full_names_the_last_good_checkpoint_and_keeps_it(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"step": 1}, path)

    def full(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(Exception, match=f"No space left on device.*the last good checkpoint {path} is intact"):
        save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left


def test_stale_temporaries_of_killed_writes_are_removed_at_start(tmp_path, capsys):
    run = tmp_path / "run"
    dead = touch(run / ".checkpoint.pt.tmp999999999")
    mine = touch(run / ".checkpoint.pt.tmpnotapid")
    assert main(["pretrain", "--method", "seco", "--out", str(run), *SMALL, "train.max_steps=1"]) == 0
    assert not dead.exists() and not mine.exists() and (run / "checkpoint.pt").is_file()
