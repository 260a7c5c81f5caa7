"""A bad-input corpus generated here: every file is reported, training skips or raises."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vidssl.cli import main
from vidssl.data.check import check_source
from vidssl.data.dataset import FileOpener, VideoDataset
from vidssl.data.encode import write_video
from vidssl.data.samplers import SeCoTripletSampler
from vidssl.data.sources import load_source
from vidssl.data.transforms import ClipAugment
from vidssl.errors import DataError


@pytest.fixture(scope="module")
def broken_ucf(tmp_path_factory, video_files, frames) -> Path:
    root = tmp_path_factory.mktemp("broken")
    good = video_files["h264_short_gop"]
    data = good.read_bytes()
    files = {
        "Good/v_Good_g01_c01.mp4": data,
        "Good/v_Good_g02_c01.mp4": data,
        "Bad/v_Bad_g01_c01.mp4": bytes(range(256)) * 40,  # random bytes
        "Bad/v_Bad_g01_c02.mp4": data[: len(data) // 2],  # truncated
        "Bad/v_Bad_g01_c03.mp4": b"",  # zero bytes
        "Bad/v_Bad_g01_c04.mp4": b"this is not a video\n" * 10,  # text
        "Bad/v_Bad_g01_c05.mp4": data[:48] + bytes(len(data) - 48),  # zeroed after the header
    }
    for rel, payload in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    write_video(root / "Bad/v_Bad_g01_c06.mp4", frames[:1])  # a 1-frame video
    import av

    with av.open(str(root / "Bad/v_Bad_g01_c07.mkv"), "w") as c:  # a video stream with 0 frames
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
    (root / "classInd.txt").write_text("1 Good\n2 Bad\n")
    lines = [f"{rel} {1 if rel.startswith('Good') else 2}" for rel in files]
    lines += ["Bad/v_Bad_g01_c06.mp4 2", "Bad/v_Bad_g01_c07.mkv 2", "Bad/v_Bad_g02_c01.mp4 2",
              "Ugly/v_Ugly_g01_c01.mp4 1", "Good/v_Good_g02_c01.mp4 2"]
    (root / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    (root / "testlist01.txt").write_text("")
    return root


def test_check_reports_every_bad_entry(broken_ucf):
    source = load_source(broken_ucf, subset="train")
    report = check_source(source, FileOpener(), min_frames=2)
    reasons = [p.reason for p in report.problems]
    assert report.ok == 2 and len(report.problems) == 10, reasons
    text = "\n".join(f"{p.where} {p.reason}" for p in report.problems)
    for name in ("c01.mp4", "c02.mp4", "c03.mp4", "c04.mp4", "c05.mp4", "c06.mp4", "c07.mkv"):
        assert f"v_Bad_g01_{name}" in text
    assert "empty" in text and "too short: 1 frame" in text
    assert "missing file 'Bad/v_Bad_g02_c01.mp4'" in text
    assert "unknown class 'Ugly'" in text and "mislabeled" in text


def test_cli_check_lists_them_and_exits_nonzero(broken_ucf, capsys):
    assert main(["data", "check", str(broken_ucf), "--subset", "train"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert out.out.count("BAD ") == 10 and "2 ok, 10 bad" in out.out


def test_cli_error_without_traceback(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_training_dataset_skips_with_a_count(broken_ucf):
    source = load_source(broken_ucf, subset="train")
    ds = VideoDataset(source, SeCoTripletSampler(), ClipAugment(size=16), repeat=(2, 1, 1), layout="frame")
    skipped = 0
    for i in range(len(ds)):
        sample = ds[i]
        assert Path(source.records[sample["index"]].path).parent.name == "Good"
        skipped += sample["skipped"]
        assert len(sample["views"]) == 4 and sample["views"][0].shape == (3, 16, 16)
    assert skipped > 0


def test_strict_mode_raises_naming_the_file(broken_ucf, tmp_path):
    source = load_source(broken_ucf, subset="train")
    with pytest.raises(DataError, match="missing file"):
        VideoDataset(source, SeCoTripletSampler(), ClipAugment(size=16), strict=True)
    source.problems.clear()
    ds = VideoDataset(source, SeCoTripletSampler(), ClipAugment(size=16), strict=True)
    bad = next(i for i, r in enumerate(source.records) if "Bad" in r.path)
    with pytest.raises(DataError, match=Path(source.records[bad].path).name):
        ds[bad]


def test_all_broken_gives_up_with_a_message(broken_ucf, tmp_path):
    for f in (broken_ucf / "Bad").iterdir():
        shutil.copy(f, tmp_path / f.name)
    source = load_source(tmp_path, layout="folder")
    ds = VideoDataset(source, SeCoTripletSampler(), ClipAugment(size=16), max_substitutes=3)
    with pytest.raises(DataError, match="consecutive unusable videos"):
        ds[0]
