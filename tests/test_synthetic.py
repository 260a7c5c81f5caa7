from __future__ import annotations

import math

import numpy as np
import torch

from vidssl.data.sources import load_source
from vidssl.data.synthetic import FRAME_CACHE, MOTIONS, SyntheticVideos, fall


def test_deterministic_by_seed():
    a = SyntheticVideos(num_videos=5, size=32, frames=8, seed=1)
    b = SyntheticVideos(num_videos=5, size=32, frames=8, seed=1)
    c = SyntheticVideos(num_videos=5, size=32, frames=8, seed=2)
    assert torch.equal(a.render(3, [0, 7]), b.render(3, [0, 7]))
    assert not torch.equal(a.render(3, [0, 7]), c.render(3, [0, 7]))
    assert torch.equal(a.render(3, [5]), a.render(3, range(8))[5:6])  # frames are independent


def test_reversible_twins_are_each_other_played_backwards():
    videos = SyntheticVideos(num_videos=20, size=32, frames=24, seed=3, dynamics="reversible")
    p = videos.video_params(0)
    for forward in range(0, len(MOTIONS), 2):
        for u in np.linspace(0, 1, 7):
            np.testing.assert_allclose(videos.actor_state(forward + 1, u, p),
                                       videos.actor_state(forward, 1 - u, p), atol=1e-9)


def test_arrow_twins_both_decelerate(synth):
    p = synth.video_params(0)
    for motion in (0, 1):  # MoveLeft and its twin MoveRight: the same video backwards would accelerate
        xs = [synth.actor_state(motion, u, p)[0] for u in (0.0, 0.5, 1.0)]
        assert abs(xs[1] - xs[0]) > 2 * abs(xs[2] - xs[1])
        assert (xs[1] - xs[0]) * (xs[2] - xs[1]) > 0
    assert synth.actor_state(0, 0.0, p)[0] > synth.actor_state(1, 0.0, p)[0]  # left vs right


def test_friction_is_the_arrow_videos_without_their_ink(monkeypatch):
    arrow = SyntheticVideos(num_videos=20, size=32, frames=12, seed=3)
    friction = SyntheticVideos(num_videos=20, size=32, frames=12, seed=3, dynamics="friction")
    with_ink = arrow.render(0, [11])
    monkeypatch.setattr(SyntheticVideos, "_ink", lambda *args: None)
    FRAME_CACHE.clear()  # the cache holds frames rendered with ink
    try:
        assert torch.equal(friction.render(0, range(12)), arrow.render(0, range(12)))
    finally:
        FRAME_CACHE.clear()  # nor may it keep the arrow frames rendered without
    assert not torch.equal(with_ink, friction.render(0, [11]))
    p = friction.video_params(0)
    xs = [friction.actor_state(0, u, p)[0] for u in (0.0, 0.5, 1.0)]
    assert abs(xs[1] - xs[0]) > 2 * abs(xs[2] - xs[1])  # it still decelerates


def test_ink_only_accumulates(synth):
    """Every pixel's stain moves monotonically away from the background as time goes on."""
    for i in range(len(MOTIONS)):
        p = synth.video_params(i)
        yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
        previous = np.zeros((32, 32))
        for u in np.linspace(0, 1, 9):
            img = np.full((32, 32, 3), 128.0)
            synth._ink(img, synth.motion_of(i), u, p, xx, yy)
            stain = np.abs(img - 128.0).sum(-1)
            assert (stain >= previous - 1e-9).all(), (i, u)
            previous = stain
        assert previous.max() > 30, i  # the ink is visible by the end


def test_dropped_objects_fall_bounce_and_rest():
    size, radius = 64, 4.0
    path = fall(np.array([30.0, 8.0]), 12.0, radius, size)
    floor = size - radius
    assert (path[:, 1] <= floor + 1e-9).all() and (path[:, 0] >= radius).all()
    assert np.allclose(path[-40:, 1], floor)  # at rest on the floor well before the end
    landed = int(np.argmax(path[:, 1] >= floor - 1e-9))
    assert 0.2 < landed / 256 < 0.6  # a drop from near the top lands in the first half
    dy = np.diff(path[:landed, 1])
    assert (np.diff(dy) > 0).all()  # accelerates while falling
    y = path[landed:, 1]
    apexes = [floor - y[k] for k in range(1, len(y) - 1) if y[k] < y[k - 1] and y[k] <= y[k + 1]]
    assert len(apexes) >= 2 and apexes[0] > 2  # it bounces, lower each time
    assert all(a > b for a, b in zip(apexes, apexes[1:], strict=False))


def test_arrow_labels_play_every_other_clip_backwards():
    motion = SyntheticVideos(num_videos=80, size=16, frames=10, seed=2, clips_per_group=2)
    arrow = SyntheticVideos(**{**motion.__dict__, "labels": "arrow"})
    source = arrow.source("all")
    assert source.class_names == ["Forward", "Backward"]
    for cls in range(len(MOTIONS)):
        labels = [r.label for r in source.records[cls::len(MOTIONS)]]
        assert labels.count(0) == labels.count(1)  # balanced within every motion class
    for subset in ("train", "test"):  # and in both splits
        labels = [r.label for r in arrow.source(subset).records]
        assert labels.count(0) == labels.count(1), subset
    one_per_group = SyntheticVideos(num_videos=40, clips_per_group=1, labels="arrow").source("test")
    assert {r.label for r in one_per_group.records} == {0, 1}
    for i in range(20):
        forward = motion.render(i, range(10))
        if arrow.is_backward(i):
            assert torch.equal(arrow.render(i, range(10)), forward.flip(0))
        else:
            assert torch.equal(arrow.render(i, range(10)), forward)


def test_the_actor_moves(synth):
    clip = synth.render(0, [0, synth.frames - 1]).float()  # MoveLeft
    assert (clip[0] - clip[1]).abs().mean() > 5


def test_labels_and_groups(synth):
    motion = synth.source("all")
    app = SyntheticVideos(**{**synth.__dict__, "labels": "appearance"}).source("all")
    assert [r.label for r in motion.records[:10]] == list(range(10))
    assert len(app.class_names) == 5 and all(0 <= r.label < 5 for r in app.records)
    train, test = synth.source("train"), synth.source("test")
    assert len(train) + len(test) == synth.num_videos and len(test) > 0
    assert not {r.group for r in train.records} & {r.group for r in test.records}


def test_the_scene_does_not_tell_the_motion():
    """Group g of every class is filmed in one scene, and test scenes are unseen in training: the
    background and the actor's colours carry no class information."""
    videos = SyntheticVideos(num_videos=80, size=16, frames=4, clips_per_group=2)
    by_group: dict[int, set] = {}
    for i in range(80):
        by_group.setdefault(videos.group_of(i), set()).add(repr(videos._scene(i)))
    assert all(len(scenes) == 1 for scenes in by_group.values()) and len(by_group) == 4
    left, right = [i for i in range(80) if videos.group_of(i) == 1 and videos.motion_of(i) in (0, 1)][:2]
    assert videos.motion_of(left) != videos.motion_of(right)
    assert repr(videos._scene(left)) == repr(videos._scene(right))
    train_scenes = {repr(videos._scene(i)) for i in range(80) if not videos.is_test(i)}
    assert not train_scenes & {repr(videos._scene(i)) for i in range(80) if videos.is_test(i)}


def test_write_ucf101_roundtrip(ucf_dir):
    train = load_source(ucf_dir, subset="train")
    test = load_source(ucf_dir, subset="test")
    assert train.layout == "ucf101" and not train.problems and not test.problems
    assert len(train) + len(test) == 20 and train.class_names == list(MOTIONS)
    assert not {r.group for r in train.records} & {r.group for r in test.records}
    app = load_source(ucf_dir / "appearance_trainlist01.txt", layout="path_list")
    assert len(app) == len(train) and {r.label for r in app.records} <= set(range(5))
    arrow = load_source(ucf_dir / "arrow_trainlist01.txt", layout="path_list")
    assert not arrow.problems and len(arrow) == len(train)
    assert (ucf_dir / "arrow_classInd.txt").read_text() == "1 Forward\n2 Backward\n"


def test_frame_cache_returns_the_rendered_frames(monkeypatch):
    import vidssl.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "FRAME_CACHE", synthetic.FrameCache(10 * 2**20))
    videos = synthetic.SyntheticVideos(num_videos=20, size=16, frames=8)
    first = videos.render(3, [0, 5, 2])
    assert len(synthetic.FRAME_CACHE.frames) == 3
    again = videos.render(3, [2, 5, 0, 1])  # three from the cache, one rendered
    assert torch.equal(again[:3], first.flip(0)) and len(synthetic.FRAME_CACHE.frames) == 4
    other = synthetic.SyntheticVideos(num_videos=20, size=16, frames=8, seed=1)
    assert not torch.equal(other.render(3, [0]), first[:1])  # the key includes the seed
    synthetic.FRAME_CACHE.clear()  # (a first epoch again, for bench speed): rendered anew, the same
    assert not synthetic.FRAME_CACHE.frames and synthetic.FRAME_CACHE.bytes == 0
    assert torch.equal(videos.render(3, [0, 5, 2]), first) and len(synthetic.FRAME_CACHE.frames) == 3
    monkeypatch.setattr(synthetic, "FRAME_CACHE", synthetic.FrameCache(0))  # disabled: same frames
    assert torch.equal(videos.render(3, [2, 5, 0, 1]), again)


def test_objects_painted_on_their_bounding_box_equal_full_frame_painting(monkeypatch):
    """Painting only each object's bounding box must give the frames of painting the whole frame
    (every shape, rotated and scaled, lies inside OBJECT_EXTENT radii)."""
    import vidssl.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "FRAME_CACHE", synthetic.FrameCache(0))
    videos = synthetic.SyntheticVideos(num_videos=40, size=48, frames=12, seed=5)
    boxed = [videos.render(i, range(12)) for i in range(40)]  # every motion and shape
    monkeypatch.setattr(synthetic, "OBJECT_EXTENT", 1e6)  # the box is the whole frame
    for i in range(40):
        assert torch.equal(videos.render(i, range(12)), boxed[i])
    corners = np.array([[0.8, 0.8], [-0.8, 0.8]]) @ np.array([[1, 1], [-1, 1]]) / math.sqrt(2)  # turned 45°
    assert np.abs(corners).max() < synthetic.OBJECT_EXTENT


def test_painting_by_selection_equals_the_alpha_blend():
    """``paint`` selects colours where the blend's weights are 0 or 1 (the texture; the mask of an
    opaque object): the bytes of the blend ``img (1 - a) + (tex c0 + (1 - tex) c1) a`` it stands for."""
    from vidssl.data.synthetic import SHAPES, SyntheticVideos, _Object, _shape_mask

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float32)
    for k in range(60):
        obj = _Object(SHAPES[k % len(SHAPES)], (rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)), k % 3,
                      float(rng.uniform(3, 8)), float(rng.uniform(4, 12)))
        cx, cy, scale, angle = *rng.uniform(0, 40, 2), float(rng.uniform(0.5, 1.5)), float(rng.uniform(0, 6.3))
        alpha = (1.0, 0.5, float(rng.uniform()))[k % 3]
        img = rng.uniform(0, 255, (40, 40, 3))
        expected = img.copy()
        dx, dy = (xx - cx) / (obj.radius * scale), (yy - cy) / (obj.radius * scale)
        lx, ly = math.cos(angle) * dx + math.sin(angle) * dy, -math.sin(angle) * dx + math.cos(angle) * dy
        mask = _shape_mask(obj.shape, lx, ly)
        tex = {0: np.sin(obj.freq * lx) > 0, 1: (np.sin(obj.freq * lx) > 0) ^ (np.sin(obj.freq * ly) > 0),
               2: np.ones_like(mask)}[obj.texture].astype(np.float32)[..., None]
        a = (alpha * mask.astype(np.float32))[..., None]
        expected = expected * (1 - a) + (tex * obj.colors[0] + (1 - tex) * obj.colors[1]) * a
        SyntheticVideos.paint(img, obj, cx, cy, scale, angle, alpha, xx, yy)
        assert np.array_equal(img, expected), k


def test_data_synth_cli_writes_the_dynamics_asked_for(tmp_path):
    import json

    from vidssl.cli import main

    args = ["data", "synth", str(tmp_path / "v"), "--videos", "20", "--size", "16", "--frames", "6",
            "--clips-per-group", "1", "--dynamics", "reversible"]
    assert main(args) == 0
    assert json.loads((tmp_path / "v" / "synth.json").read_text())["dynamics"] == "reversible"
    assert (tmp_path / "v" / "arrow_testlist01.txt").is_file()
