from __future__ import annotations

import torch
from torch.utils.data import DataLoader, default_collate

from vidssl.data.dataset import VideoDataset, collate_samples
from vidssl.data.samplers import MLFOWindowSampler, SeCoTripletSampler
from vidssl.data.synthetic import SyntheticVideos
from vidssl.data.transforms import ClipAugment


def make(synth, sampler, **kw):
    return VideoDataset(synth.source("train"), sampler, ClipAugment(size=16), opener=synth.open, **kw)


def test_same_samples_whatever_the_worker_count(synth):
    ds = make(synth, SeCoTripletSampler(), repeat=(2, 1, 1), layout="frame", seed=5)
    ds.set_epoch(2)
    batches = []
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=4, num_workers=workers, collate_fn=collate_samples)
        batches.append(next(iter(loader)))
    for a, b in zip(batches[0]["views"], batches[1]["views"], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(batches[0]["info"]["order"], batches[1]["info"]["order"])


def test_a_sample_is_a_function_of_its_epoch_and_index(synth):
    """``(epoch, index)`` keys (the run-long sampler's) give the same sample whenever asked, and a
    plain index is the sample at the dataset's current epoch."""
    for sampler, kw in ((SeCoTripletSampler(), {"repeat": (2, 1, 1), "layout": "frame"}),
                        (MLFOWindowSampler(window=8, strides=(1, 2)), {})):
        ds = make(synth, sampler, seed=3, **kw)
        first, again = ds[(1, 4)], ds[(1, 4)]
        assert all(torch.equal(a, b) for a, b in zip(first["views"], again["views"], strict=True))
        ds.set_epoch(1)
        assert all(torch.equal(a, b) for a, b in zip(first["views"], ds[4]["views"], strict=True))
        assert not torch.equal(first["views"][0], ds[(2, 4)]["views"][0])  # epochs 1 and 2 of video 4


def test_collate_holds_the_default_batch_in_two_tensors(synth):
    """The views are views of one tensor and the integer fields columns of one table (a loader
    worker hands over each tensor separately), with the values and shapes of default_collate."""
    for sampler, kw in ((SeCoTripletSampler(), {"repeat": (2, 1, 1), "layout": "frame"}),
                        (MLFOWindowSampler(window=8, strides=(1, 2)), {})):
        ds = make(synth, sampler, **kw)
        samples = [ds[i] for i in range(5)]
        samples[3]["skipped"], samples[2]["label"] = 2, -1
        ours, expected = collate_samples(samples), default_collate(samples)
        assert ours.keys() == expected.keys() and ours["info"].keys() == expected["info"].keys()
        assert all(torch.equal(a, b) for a, b in zip(ours["views"], expected["views"], strict=True))
        for k in ("label", "index", "skipped"):
            assert torch.equal(ours[k], expected[k]) and ours[k].dtype == expected[k].dtype
        for k in expected["info"]:
            assert torch.equal(ours["info"][k], expected["info"][k])
        numbers = [ours[k] for k in ("label", "index", "skipped")] + list(ours["info"].values())
        assert len({v.untyped_storage().data_ptr() for v in ours["views"]}) == 1
        assert len({v.untyped_storage().data_ptr() for v in numbers}) == 1
    frames = [{**samples[0], "views": [torch.zeros(3, 4, 4), torch.zeros(3, 2, 2)]}] * 2
    assert [tuple(v.shape) for v in collate_samples(frames)["views"]] == [(2, 3, 4, 4), (2, 3, 2, 2)]


def test_epochs_differ_and_repeat(synth):
    ds = make(synth, SeCoTripletSampler(), layout="frame")
    a = ds[0]["views"][0]
    ds.set_epoch(1)
    b = ds[0]["views"][0]
    ds.set_epoch(0)
    assert not torch.equal(a, b) and torch.equal(ds[0]["views"][0], a)


def test_clip_layout(synth):
    ds = make(synth, MLFOWindowSampler(window=8, strides=(1, 2)))
    s = ds[0]
    assert [tuple(v.shape) for v in s["views"]] == [(3, 4, 16, 16)] * 3 and s["info"]["stride"] in (1, 2)


def test_short_videos_policy():
    short = SyntheticVideos(num_videos=3, size=16, frames=2, seed=0)
    src = short.source("all")
    ds = VideoDataset(src, SeCoTripletSampler(), ClipAugment(size=8), opener=short.open,
                      short_videos="repeat", layout="frame")
    assert ds[0]["skipped"] == 0
    skip = VideoDataset(src, SeCoTripletSampler(), ClipAugment(size=8), opener=short.open, max_substitutes=2)
    try:
        skip[0]
    except Exception as exc:
        assert "consecutive unusable" in str(exc)
    else:
        raise AssertionError("too-short videos must be skipped")
