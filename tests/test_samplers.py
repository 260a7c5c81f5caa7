from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vidssl.data.samplers import (
    MinimalOffsetClipSampler,
    MLFOWindowSampler,
    RandomClipsSampler,
    SeCoTripletSampler,
    SegmentTupleSampler,
    UniformClipSampler,
    UniformFrameSampler,
    clip_indices,
    segment_bounds,
)

lengths = st.integers(min_value=1, max_value=600)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def in_range(plan, n):
    return all(0 <= i < n for v in plan.views for i in v)


@settings(max_examples=200, deadline=None)
@given(lengths, seeds)
def test_seco_triplet(n, seed):
    s = SeCoTripletSampler()
    plan = s.plan(n, np.random.default_rng(seed))
    assert in_range(plan, n) and len(plan.views) == 3
    (a,), (f2,), (f3,) = plan.views
    assert f2 <= f3
    if n >= s.min_frames:
        half = n // 2
        assert len({a, f2, f3}) == 3
        if plan.info["order"] == 0:
            assert a < half <= f2 < f3
        else:
            assert f2 < f3 < half <= a


@settings(max_examples=200, deadline=None)
@given(lengths, seeds, st.integers(1, 5))
def test_vclr_tuples_one_frame_per_segment(n, seed, segments):
    s = SegmentTupleSampler(segments)
    plan = s.plan(n, np.random.default_rng(seed))
    q, k = plan.views
    assert in_range(plan, n) and len(q) == len(k) == segments
    if n >= s.min_frames:
        for (lo, hi), qi, ki in zip(segment_bounds(n, segments), q, k, strict=True):
            assert lo <= qi < hi and lo <= ki < hi and qi != ki


@settings(max_examples=100, deadline=None)
@given(st.integers(12, 400), seeds)
def test_vclr_clip_variant(n, seed):
    s = SegmentTupleSampler(3, clip_len=4, dilation=1)
    plan = s.plan(n, np.random.default_rng(seed))
    assert len(plan.views) == 6 and all(len(v) == 4 for v in plan.views)
    if n >= s.min_frames:
        bounds = segment_bounds(n, 3)
        for j in range(3):
            q, k = plan.views[j], plan.views[3 + j]
            assert q[0] != k[0] and bounds[j][0] <= q[0] < bounds[j][1] and bounds[j][0] <= k[0] < bounds[j][1]


@settings(max_examples=200, deadline=None)
@given(lengths, seeds, st.integers(2, 4), st.integers(1, 16), st.integers(1, 2))
@example(n=7, seed=0, k=4, t=2, d=1)  # evenly spaced starts 0, 1.67, 3.33, 5 round to 0, 2, 3, 5: 1 < delta 1.25
def test_corp_minimal_offset(n, seed, k, t, d):
    s = MinimalOffsetClipSampler(num_clips=k, clip_len=t, dilation=d, max_retries=50)
    plan = s.plan(n, np.random.default_rng(seed))
    assert in_range(plan, n) and len(plan.views) == k
    starts = plan.info["starts"]
    assert [v[0] for v in plan.views] == list(starts)
    for v in plan.views:
        steps = {b - a for a, b in zip(v, v[1:], strict=False)}
        assert steps <= ({d} if n >= (t - 1) * d + 1 else set(range(d + 1)))
    delta = min(max((n - d * t) / k, 1), d * t)  # CORP eq. 3, written out independently of s.delta
    pairs_ok = all(abs(a - b) >= delta for i, a in enumerate(starts) for b in starts[i + 1:])
    if plan.info["fallback"] == 0:
        assert pairs_ok
    if n >= s.min_frames:
        assert pairs_ok  # the fallback satisfies the rule whenever the video is long enough


def test_corp_minimal_offset_by_hand():
    """CORP eq. 3 at hand-computed points: Δ = min(max((L - D·T) / K, 1), D·T)."""
    s = MinimalOffsetClipSampler(num_clips=4, clip_len=16, dilation=2)
    assert s.delta(200) == 32.0  # (200 - 32) / 4 = 42, capped at D·T = 32
    assert s.delta(50) == 4.5  # (50 - 32) / 4
    assert s.delta(20) == 1.0  # shorter than D·T: at least one frame apart


def test_corp_fallback_is_deterministic_and_even():
    s = MinimalOffsetClipSampler(num_clips=4, clip_len=16, dilation=2, max_retries=0)
    plan = s.plan(200, np.random.default_rng(0))
    assert plan.info["fallback"] == 1
    assert sorted(plan.info["starts"]) == [0, 56, 113, 169]


def test_corp_order_is_balanced():
    s = MinimalOffsetClipSampler(num_clips=2, clip_len=8, dilation=1)
    rng = np.random.default_rng(0)
    starts = [s.plan(300, rng).info["starts"] for _ in range(2000)]
    assert 0.45 < np.mean([a < b for a, b in starts]) < 0.55


@settings(max_examples=200, deadline=None)
@given(lengths, seeds)
def test_mlfo_window(n, seed):
    s = MLFOWindowSampler()
    plan = s.plan(n, np.random.default_rng(seed))
    c1, c2, g = plan.views
    assert in_range(plan, n) and len(c1) == len(c2) == 16 and len(g) == 16
    window = c1 + c2
    assert g == window[::2]
    stride = plan.info["stride"]
    if n >= (32 - 1) * stride + 1:
        assert all(b - a == stride for a, b in zip(window, window[1:], strict=False))


@settings(max_examples=100, deadline=None)
@given(lengths, seeds)
def test_random_clips(n, seed):
    plan = RandomClipsSampler(2, 8, 2).plan(n, np.random.default_rng(seed))
    assert in_range(plan, n) and len(plan.views) == 2


@settings(max_examples=100, deadline=None)
@given(lengths)
def test_uniform_eval_samplers(n):
    frames = UniformFrameSampler(30).plan(n)
    idx = [v[0] for v in frames.views]
    assert len(idx) == 30 and idx == sorted(idx) and all(0 <= i < n for i in idx)
    if n >= 30:
        assert len(set(idx)) == 30
    clips = UniformClipSampler(10, 16).plan(n)
    assert len(clips.views) == 10 and clips.views[0][0] == 0
    if n >= 16:
        assert clips.views[-1][-1] == n - 1


def test_clip_indices_clamp_short_video():
    assert clip_indices(0, 5, 2, 4) == (0, 2, 3, 3, 3)


@settings(max_examples=200, deadline=None)
@given(lengths, seeds)
def test_mlfo_window_with_a_real_stride_as_the_official_code(n, seed):
    """A real rate in [1, min(3, n / 32)], frames round(start + rate k) clamped: evenly spread to
    within rounding, the global clip every second frame, nothing outside the video."""
    s = MLFOWindowSampler(max_rate=3.0)
    plan = s.plan(n, np.random.default_rng(seed))
    c1, c2, g = plan.views
    window, rate = c1 + c2, plan.info["stride"]
    assert in_range(plan, n) and len(window) == 32 and g == window[::2]
    assert 1.0 <= rate <= max(1.0, min(3.0, n / 32))
    if n >= 32:
        assert all(abs(f - (window[0] + rate * k)) <= 0.5 + 1e-9 for k, f in enumerate(window))


def test_mlfo_real_strides_spread_over_their_range():
    s = MLFOWindowSampler(max_rate=3.0)
    rng = np.random.default_rng(0)
    rates = [s.plan(300, rng).info["stride"] for _ in range(2000)]
    assert min(rates) < 1.1 and max(rates) > 2.9 and 1.9 < float(np.mean(rates)) < 2.1
    assert len({round(r, 6) for r in rates}) > 1000  # real, not a handful of whole strides
    short = [s.plan(48, rng).info["stride"] for _ in range(200)]
    assert max(short) <= 48 / 32  # capped by the video: the window fits
