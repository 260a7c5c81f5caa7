from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vidssl.data.sources import detect_layout, load_source, parse_path_list
from vidssl.errors import DataError


@pytest.fixture(scope="module")
def clip(video_files) -> Path:
    return video_files["h264_short_gop"]


def put(path: Path, src: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, path)
    return path


def reasons(source) -> list[str]:
    return [p.reason for p in source.problems]


def test_ucf101(tmp_path, clip):
    (tmp_path / "ucfTrainTestlist").mkdir()
    (tmp_path / "ucfTrainTestlist/classInd.txt").write_text("1 Archery\n2 Bowling\n")
    put(tmp_path / "UCF-101/Archery/v_Archery_g08_c01.avi", clip)
    put(tmp_path / "UCF-101/Bowling/v_Bowling_g09_c02.avi", clip)
    put(tmp_path / "UCF-101/Bowling/v_Bowling_g01_c01.avi", clip)
    (tmp_path / "ucfTrainTestlist/trainlist01.txt").write_text(
        "Archery/v_Archery_g08_c01.avi 1\nBowling/v_Bowling_g09_c02.avi 2\n"
        "Bowling/v_Bowling_g10_c01.avi 2\nArchery/v_Archery_g09_c01.avi 2\nJuggling/v_Juggling_g08_c01.avi 3\n"
        "../../etc/passwd 1\n")
    (tmp_path / "ucfTrainTestlist/testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\n")
    assert detect_layout(tmp_path) == "ucf101"
    train = load_source(tmp_path, subset="train")
    assert [(Path(r.path).name, r.label, r.group) for r in train.records] == [
        ("v_Archery_g08_c01.avi", 0, "Archery_g08"), ("v_Bowling_g09_c02.avi", 1, "Bowling_g09")]
    got = reasons(train)
    assert len(got) == 4
    assert "missing file" in got[0] and "mislabeled" in got[1] and "unknown class" in got[2]
    assert "outside the dataset root" in got[3] or "unknown class" in got[3]
    test = load_source(tmp_path, subset="test")
    assert [(r.label, r.group) for r in test.records] == [(1, "Bowling_g01")] and not test.problems


def test_path_outside_root_is_refused(tmp_path, clip):
    put(tmp_path / "outside.mp4", clip)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/list.txt").write_text("../outside.mp4 0\n")
    src = parse_path_list(tmp_path / "data/list.txt")
    assert not src.records and "outside the dataset root" in reasons(src)[0]


def test_hmdb51(tmp_path, clip):
    put(tmp_path / "brush_hair/a.avi", clip)
    put(tmp_path / "brush_hair/b.avi", clip)
    put(tmp_path / "cartwheel/c.avi", clip)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    (tmp_path / "splits/cartwheel_test_split1.txt").write_text("c.avi 1\nd.avi 0\nbad line\n")
    assert detect_layout(tmp_path) == "hmdb51"
    train = load_source(tmp_path, subset="train")
    assert train.class_names == ["brush_hair", "cartwheel"]
    assert [(Path(r.path).name, r.label) for r in train.records] == [("a.avi", 0), ("c.avi", 1)]
    assert len(train.problems) == 1 and "expected" in train.problems[0].reason
    test = load_source(tmp_path, subset="test")
    assert [(Path(r.path).name, r.label) for r in test.records] == [("b.avi", 0)]


def test_kinetics_csv_and_class_folders(tmp_path, clip):
    put(tmp_path / "abseiling/AAA_000010_000020.mp4", clip)
    put(tmp_path / "zumba/BBB_000001_000011.mp4", clip)
    (tmp_path / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nabseiling,AAA,10,20,train\n"
        "zumba,BBB,1,11,train\nzumba,CCC,5,15,train\nabseiling,DDD,1,2,val\n")
    src = load_source(tmp_path / "train.csv", subset="train")
    assert src.layout == "kinetics_csv" and src.class_names == ["abseiling", "zumba"]
    assert [r.label for r in src.records] == [0, 1] and "missing file 'CCC_000005_000015.*'" in reasons(src)[0]
    folders = load_source(tmp_path, layout="class_folders")
    assert detect_layout(tmp_path / "abseiling") == "folder"
    assert [r.label for r in folders.records] == [0, 1] and folders.class_names == ["abseiling", "zumba"]


def test_ssv2(tmp_path, clip):
    put(tmp_path / "20bn-something-something-v2/1.webm", clip)
    put(tmp_path / "20bn-something-something-v2/2.webm", clip)
    (tmp_path / "labels.json").write_text(json.dumps({"Pushing something": "1", "Holding something": "0"}))
    (tmp_path / "train.json").write_text(json.dumps([
        {"id": "1", "label": "pushing a cup", "template": "Pushing [something]", "placeholders": ["a cup"]},
        {"id": "2", "template": "Holding [something]"},
        {"id": "3", "template": "Dancing [something]"},
    ]))
    src = load_source(tmp_path, subset="train")
    assert src.layout == "ssv2" and src.class_names == ["Holding something", "Pushing something"]
    assert [r.label for r in src.records] == [1, 0] and "unknown class template" in reasons(src)[0]


def test_frame_list_and_folder(tmp_path, clip):
    from PIL import Image

    for name in ("v1", "v2"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(tmp_path / name / f"img_{i + 1:05d}.jpg")
    (tmp_path / "list.txt").write_text("v1 3 0\nv2 3 1\nv3 3 1\n")
    src = load_source(tmp_path / "list.txt")
    assert src.layout == "frame_list" and [r.num_frames for r in src.records] == [3, 3]
    assert "missing file" in reasons(src)[0]
    put(tmp_path / "vids/a/x.mp4", clip)
    put(tmp_path / "vids/y.mkv", clip)
    folder = load_source(tmp_path / "vids")
    assert folder.layout == "folder" and len(folder) == 2 and all(r.label is None for r in folder.records)


def test_path_list_labels(tmp_path, clip):
    put(tmp_path / "my video.mp4", clip)
    put(tmp_path / "b.mp4", clip)
    (tmp_path / "l.txt").write_text("my video.mp4 1\nb.mp4\nmy video.mp4 jump\nb.mp4 run\n")
    src = parse_path_list(tmp_path / "l.txt", class_names=["run", "walk"])
    assert [(Path(r.path).name, r.label) for r in src.records] == [("my video.mp4", 1), ("b.mp4", None), ("b.mp4", 0)]
    assert "unknown class name 'jump'" in reasons(src)[0]


def test_missing_list_file_is_a_clear_error(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 A\n")
    with pytest.raises(DataError, match="trainlist01.txt not found"):
        load_source(tmp_path)


def test_index_cache_invalidated_when_file_changes(tmp_path, video_files):
    from vidssl.data.index import VideoIndex

    path = put(tmp_path / "v.mp4", video_files["h264_short_gop"])
    index = VideoIndex(tmp_path / "index.json")
    assert index.get(str(path)).num_frames == 24
    index.save()
    again = VideoIndex(tmp_path / "index.json")
    assert again.cached(str(path)).num_frames == 24
    shutil.copy(video_files["vp9"], path)  # same frame count, different bytes
    import os
    os.utime(path, ns=(1, 1))
    assert again.cached(str(path)) is None
    assert again.get(str(path)).num_frames == 24 and again.dirty


def test_ucf101_finds_videos_in_mmaction2s_videos_folder_and_missing_files_say_where_it_looked(tmp_path):
    from vidssl.data.sources import parse_ucf101

    (tmp_path / "videos" / "Jump").mkdir(parents=True)
    (tmp_path / "videos" / "Jump" / "v_Jump_g01_c01.avi").write_bytes(b"")
    (tmp_path / "classInd.txt").write_text("1 Jump\n")
    (tmp_path / "trainlist01.txt").write_text("Jump/v_Jump_g01_c01.avi 1\nJump/v_Jump_g02_c01.avi 1\n")
    src = parse_ucf101(tmp_path, 1, "train")
    assert [Path(r.path).relative_to(tmp_path).as_posix() for r in src.records] == ["videos/Jump/v_Jump_g01_c01.avi"]
    (problem,) = src.problems
    assert f"looked in {tmp_path / 'videos'}, {tmp_path}" in problem.reason and "link them" in problem.reason
    (tmp_path / "list.txt").write_text("elsewhere/a.mp4 0\n")
    (problem,) = parse_path_list(tmp_path / "list.txt").problems
    assert "--root" in problem.reason
