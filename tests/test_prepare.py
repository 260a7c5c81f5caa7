"""`vidssl data prepare`: a same-layout copy with short side, key-frame interval and frame rate as
asked, JPEG frames with their lists, failures listed, reruns resume."""

from __future__ import annotations

import json

import av
import pytest
import torch

from vidssl.cli import main
from vidssl.data.decoders import open_video
from vidssl.data.encode import write_video
from vidssl.data.prepare import PrepareOptions, prepare_dataset, resized_size
from vidssl.data.sources import load_source, parse_ssv2
from vidssl.data.synthetic import SyntheticVideos


def test_resized_size_keeps_the_aspect_never_enlarges_and_stays_even():
    assert resized_size(640, 360, 320) == (568, 320)
    assert resized_size(320, 240, 320) == (320, 240)
    assert resized_size(101, 75, 50) == (68, 50)


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    SyntheticVideos(num_videos=20, size=64, frames=24, seed=2, clips_per_group=1).write_ucf101(root)
    (root / "MoveLeft" / "broken.mp4").write_bytes(b"\x00\x00\x00 ftypisom" + bytes(64))
    return root


def _keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [n for n, packet in enumerate(c.demux(c.streams.video[0])) if packet.size and packet.is_keyframe]


def test_prepare_writes_the_same_layout_smaller_with_short_gops(ucf, tmp_path, capsys):
    dst = tmp_path / "prepared"
    assert main(["data", "prepare", str(ucf), str(dst), "--short-side", "48", "--gop", "6", "--jobs", "2"]) == 0
    assert "30 videos prepared, 0 already done, 1 failed"  # 20 + 10 Backward copies in capsys.readouterr().out
    assert "MoveLeft/broken.mp4\tInvalidDataError" in (dst / "prepare_failures.txt").read_text()
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt", "synth.json"):
        assert (dst / name).read_bytes() == (ucf / name).read_bytes()
    for subset in ("train", "test"):
        before, after = load_source(ucf, "ucf101", 1, subset), load_source(dst, "ucf101", 1, subset)
        assert [r.label for r in after.records] == [r.label for r in before.records] and not after.problems
    video = dst / "MoveLeft" / "v_MoveLeft_g01_c01.mp4"
    reader = open_video(video)
    assert reader.num_frames == 24 and tuple(reader.get_frames([0]).shape[-2:]) == (48, 48)
    reader.close()
    assert _keyframes(video) == [0, 6, 12, 18]
    assert not list(dst.rglob("*.partial*"))
    index = json.loads((dst / ".vidssl_index.json").read_text())["videos"]
    assert index[str(video)]["num_frames"] == 24
    stamp = video.stat().st_mtime_ns
    assert main(["data", "prepare", str(ucf), str(dst), "--short-side", "48", "--gop", "6"]) == 0
    assert "0 videos prepared, 30 already done" in capsys.readouterr().out and video.stat().st_mtime_ns == stamp


def test_prepare_to_frames_writes_frame_lists_with_the_labels(ucf, tmp_path):
    dst = tmp_path / "frames"
    assert main(["data", "prepare", str(ucf), str(dst), "--to", "frames", "--jobs", "1"]) == 0
    assert len(list((dst / "MoveUp" / "v_MoveUp_g01_c01").glob("img_*.jpg"))) == 24
    frames = load_source(dst / "frames_train.txt", "frame_list")
    videos = load_source(ucf, "ucf101", 1, "train")
    assert [r.label for r in frames.records] == [r.label for r in videos.records] and not frames.problems


def test_frame_rate_cap_and_webm_to_mp4(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    frames = torch.zeros(30, 3, 32, 48, dtype=torch.uint8)
    frames[:, 0] = (torch.arange(30) * 8).view(30, 1, 1).to(torch.uint8)
    write_video(src / "a.webm", frames, fps=30, codec="libvpx-vp9")
    result = prepare_dataset(src, tmp_path / "dst", PrepareOptions(short_side=32, max_fps=15))
    assert result["prepared"] == 1 and not result["failed"]
    reader = open_video(tmp_path / "dst" / "a.mp4")
    assert reader.num_frames == 15 and abs(reader.fps - 15) < 0.01
    red = reader.get_frames(range(15))[:, 0].float().mean((1, 2))
    assert torch.allclose(red, torch.arange(0, 30, 2).float() * 8, atol=6)  # every other frame kept
    reader.close()
    with pytest.raises(ValueError, match="outside the source"):
        prepare_dataset(src, src / "inside", PrepareOptions())


def test_a_path_list_naming_webm_files_is_rewritten_to_the_mp4_copies(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "clips").mkdir(parents=True)
    frames = torch.zeros(6, 3, 32, 32, dtype=torch.uint8)
    write_video(src / "clips" / "a.webm", frames, codec="libvpx-vp9")
    write_video(src / "clips" / "b.mp4", frames)
    (src / "train.txt").write_text("clips/a.webm 0\nclips/b.mp4 1\nclips/a.webm.bak 2\n")
    assert main(["data", "prepare", str(src), str(tmp_path / "dst"), "--short-side", "32", "--jobs", "1"]) == 0
    assert (tmp_path / "dst" / "train.txt").read_text() == "clips/a.mp4 0\nclips/b.mp4 1\nclips/a.webm.bak 2\n"
    source = load_source(tmp_path / "dst" / "train.txt", "path_list")
    assert [r.label for r in source.records] == [0, 1] and len(source.problems) == 1  # the .bak never existed


def test_ssv2_reads_prepared_mp4_in_place_of_webm(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([{"id": "7", "template": "Pushing [something]"}]))
    (tmp_path / "7.mp4").write_bytes(b"")
    source = parse_ssv2(tmp_path, "train")
    assert [r.path.endswith("7.mp4") for r in source.records] == [True] and not source.problems
