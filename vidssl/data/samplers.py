"""Temporal samplers: which frame indices of a video each training or evaluation sample uses.

A sampler is a small pure object: ``plan(num_frames, rng) -> SamplePlan``. A plan lists *views*
(each a tuple of frame indices, in temporal order within the view) and integer labels/metadata the
method needs (``info``). The dataset decodes the union of all indices once and slices the views.

**Short videos.** Every sampler declares ``min_frames``, the length at which its rules hold exactly
(distinct frames, non-overlapping constraints). A video with ``1 <= num_frames < min_frames`` still
gets a valid plan: indices are clamped to the last frame (frames repeat) and random draws fall back
to drawing with replacement. The dataset decides, by its ``short_videos`` policy, whether such
videos are skipped (counted and logged) or used with repeated frames. A video with 0 frames is an
error the dataset reports as a bad file; samplers never see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations

import numpy as np

Info = dict[str, int | tuple[int, ...]]


@dataclass(frozen=True)
class SamplePlan:
    views: tuple[tuple[int, ...], ...]
    info: Info = field(default_factory=dict)

    @property
    def all_indices(self) -> list[int]:
        return sorted({i for v in self.views for i in v})


def _draw_sorted(rng: np.random.Generator, low: int, high: int, k: int) -> list[int]:
    """``k`` sorted indices from ``[low, high)``: distinct if the range allows, else with repeats.

    An empty range (``high <= low``) yields ``low`` repeated (the caller clamps to the video).
    """
    n = high - low
    if n <= 0:
        return [low] * k
    if n >= k:
        picks = rng.choice(n, size=k, replace=False)
    else:
        picks = rng.integers(0, n, size=k)
    return sorted(int(low + p) for p in picks)


def clip_indices(start: int, clip_len: int, dilation: int, num_frames: int) -> tuple[int, ...]:
    """``clip_len`` frames from ``start`` every ``dilation`` frames, clamped to the last frame."""
    last = num_frames - 1
    return tuple(min(start + dilation * j, last) for j in range(clip_len))


def clip_span(clip_len: int, dilation: int) -> int:
    """Number of frames a clip covers from its first to its last frame, inclusive."""
    return dilation * (clip_len - 1) + 1


def segment_bounds(num_frames: int, num_segments: int) -> list[tuple[int, int]]:
    """``num_segments`` equal, contiguous ``[start, end)`` segments covering the video (TSN)."""
    edges = [(s * num_frames) // num_segments for s in range(num_segments + 1)]
    return [(edges[s], max(edges[s + 1], edges[s] + 1)) for s in range(num_segments)]


@dataclass(frozen=True)
class SeCoTripletSampler:
    """SeCo's three frames and order label (SeCo Sec. 3, official code).

    Label 0: the anchor is drawn from the first half and two frames from the second half (anchor
    before the others). Label 1: the anchor from the second half and two frames from the first half.
    Views: ``(anchor,), (f2,), (f3,)`` with ``f2 < f3``; ``info["order"]`` is the label.
    """

    min_frames: int = 4

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        half = num_frames // 2
        label = int(rng.integers(0, 2))
        first, second = (0, max(half, 1)), (half, num_frames)
        anchor_range, others_range = (first, second) if label == 0 else (second, first)
        anchor = _draw_sorted(rng, *anchor_range, 1)[0]
        f2, f3 = _draw_sorted(rng, *others_range, 2)
        last = num_frames - 1
        views = tuple((min(i, last),) for i in (anchor, f2, f3))
        return SamplePlan(views, {"order": label})


@dataclass(frozen=True)
class SegmentTupleSampler:
    """VCLR's segment tuples (VCLR Sec. 3.2): ``num_segments`` equal segments, two distinct frames
    per segment; one goes to the query tuple and the other to the key tuple, at random.

    With ``clip_len > 1`` each tuple element is a clip (the 3D variant): two distinct clip starts
    per segment. Views: ``(query_tuple, key_tuple)`` for frames; for clips, ``2 * num_segments``
    views (query clips, then key clips).
    """

    num_segments: int = 3
    clip_len: int = 1
    dilation: int = 1

    @property
    def min_frames(self) -> int:
        return self.num_segments * (clip_span(self.clip_len, self.dilation) + 1)

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        span = clip_span(self.clip_len, self.dilation)
        query, key = [], []
        for start, end in segment_bounds(num_frames, self.num_segments):
            a, b = _draw_sorted(rng, start, max(end - span + 1, start + 1), 2)
            if rng.integers(0, 2):
                a, b = b, a
            query.append(a)
            key.append(b)
        if self.clip_len == 1:
            last = num_frames - 1
            return SamplePlan((tuple(min(i, last) for i in query), tuple(min(i, last) for i in key)))
        clips = [clip_indices(s, self.clip_len, self.dilation, num_frames) for s in query + key]
        return SamplePlan(tuple(clips))


@dataclass(frozen=True)
class RandomClipsSampler:
    """``num_clips`` clips of ``clip_len`` frames at dilation ``dilation``, independent uniform
    starts (SimCLR/CVRL-style two-clip sampling with ``num_clips=2``). ``info["starts"]``.
    """

    num_clips: int = 2
    clip_len: int = 8
    dilation: int = 1

    @property
    def min_frames(self) -> int:
        return clip_span(self.clip_len, self.dilation)

    def _starts(self, num_frames: int, rng: np.random.Generator) -> list[int]:
        room = max(num_frames - clip_span(self.clip_len, self.dilation) + 1, 1)
        return [int(s) for s in rng.integers(0, room, size=self.num_clips)]

    def _plan_from_starts(self, starts: list[int], num_frames: int, **info: int) -> SamplePlan:
        clips = tuple(clip_indices(s, self.clip_len, self.dilation, num_frames) for s in starts)
        return SamplePlan(clips, {"starts": tuple(starts), **info})

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        return self._plan_from_starts(self._starts(num_frames, rng), num_frames)


@dataclass(frozen=True)
class MinimalOffsetClipSampler(RandomClipsSampler):
    """CORP's clip sampler (CORP eq. 3): K clips whose starts are pairwise at least
    ``delta = min(max((L - D*T) / K, 1), D*T)`` frames apart.

    Starts are drawn independently and redrawn until the rule holds, at most ``max_retries`` times;
    then a deterministic fallback takes evenly spaced starts over the video (listed in a random
    order, so the order task stays balanced). ``info["fallback"]`` tells which happened. Clips are
    listed in draw order, not sorted: their temporal order is given by ``info["starts"]``.
    """

    num_clips: int = 4
    clip_len: int = 16
    dilation: int = 2
    max_retries: int = 100

    def delta(self, num_frames: int) -> float:
        dt = self.dilation * self.clip_len
        return min(max((num_frames - dt) / self.num_clips, 1.0), float(dt))

    @cached_property  # a scan over lengths, read for every sample: computed once per sampler
    def min_frames(self) -> int:
        """The smallest length from which on the fallback's starts satisfy the offset rule: K
        evenly spaced integer starts over ``room = L - span`` frames are at least
        ``floor(room / (K - 1))`` apart (the rounded spacing), and the rule needs ``delta(L)``.
        Both grow with ``L`` (the spacing by ``1 / (K - 1)`` per frame, ``delta`` by at most
        ``1 / K``), but the floor steps, so the rule can fail again above a length where it held:
        the lengths are scanned up to where ``delta`` has stopped growing (at ``D*T``) and the
        spacing exceeds it, and the one after the last failing length is returned."""
        dt = self.dilation * self.clip_len
        span = clip_span(self.clip_len, self.dilation)
        if self.num_clips == 1:
            return max(span, dt)
        # from this length on delta is capped at D*T and the rounded spacing exceeds it
        settled = dt + self.num_clips * dt + span + (self.num_clips - 1) * (dt + 1)
        failing = [length for length in range(span, settled + 1)
                   if (length - span) // (self.num_clips - 1) < self.delta(length)]
        return max((failing[-1] + 1) if failing else span, dt)

    def _satisfied(self, starts: list[int], delta: float) -> bool:
        return all(abs(a - b) >= delta for a, b in combinations(starts, 2))

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        delta = self.delta(num_frames)
        for _ in range(self.max_retries):
            starts = self._starts(num_frames, rng)
            if self._satisfied(starts, delta):
                return self._plan_from_starts(starts, num_frames, fallback=0)
        room = max(num_frames - clip_span(self.clip_len, self.dilation), 0)
        even = np.linspace(0, room, self.num_clips).round().astype(int)
        starts = [int(even[i]) for i in rng.permutation(self.num_clips)]
        return self._plan_from_starts(starts, num_frames, fallback=1)


@dataclass(frozen=True)
class MLFOWindowSampler:
    """MLFO's window: ``window`` frames at a random stride, then ``clip1 = window[:window//2]``,
    ``clip2 = window[window//2:]``, ``global = window[::2]``; ``info["stride"]`` is the stride used.

    With ``max_rate`` > 0, as the official code (``dataloader.py``, ``--rate 3``): a real rate drawn
    uniformly from ``[1, min(max_rate, num_frames / window)]``, a start from ``0 .. floor(num_frames -
    rate * window)``, frames ``round(start + rate * k)`` clamped to the video. Otherwise a whole
    stride from ``strides`` whose window fits the video (stride 1 if none fits).
    """

    window: int = 32
    strides: tuple[int, ...] = (1, 2, 3, 4)
    max_rate: float = 0.0

    @property
    def min_frames(self) -> int:
        return self.window if self.max_rate else clip_span(self.window, min(self.strides))

    @property
    def clip_len(self) -> int:
        """Frames per short clip (and per global clip): the clip length the encoder trains on."""
        return self.window // 2

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        if self.max_rate:
            rate = float(rng.uniform(1.0, max(1.0, min(self.max_rate, num_frames / self.window))))
            start = int(rng.integers(0, max(int(num_frames - rate * self.window), 0) + 1))
            win = tuple(min(round(start + rate * k), num_frames - 1) for k in range(self.window))
            stride: float = rate
        else:
            fitting = [s for s in self.strides if clip_span(self.window, s) <= num_frames]
            stride = int(rng.choice(fitting)) if fitting else 1
            room = max(num_frames - clip_span(self.window, stride) + 1, 1)
            win = clip_indices(int(rng.integers(0, room)), self.window, stride, num_frames)
        half = self.window // 2
        return SamplePlan((win[:half], win[half:], win[::2]), {"stride": stride})


@dataclass(frozen=True)
class UniformFrameSampler:
    """Evaluation: ``num_frames`` frames at the centres of equal segments (SeCo: 30 frames).
    Deterministic; one view per frame."""

    count: int = 30
    min_frames: int = 1

    def plan(self, num_frames: int, rng: np.random.Generator | None = None) -> SamplePlan:
        idx = [min(int((i + 0.5) * num_frames / self.count), num_frames - 1) for i in range(self.count)]
        return SamplePlan(tuple((i,) for i in idx))


@dataclass(frozen=True)
class UniformClipSampler:
    """Evaluation: ``num_clips`` clips with evenly spaced starts over the video (CORP: 10 clips).
    Deterministic; one view per clip."""

    num_clips: int = 10
    clip_len: int = 16
    dilation: int = 1

    @property
    def min_frames(self) -> int:
        return clip_span(self.clip_len, self.dilation)

    def plan(self, num_frames: int, rng: np.random.Generator | None = None) -> SamplePlan:
        room = max(num_frames - clip_span(self.clip_len, self.dilation), 0)
        starts = np.linspace(0, room, self.num_clips).round().astype(int)
        clips = tuple(clip_indices(int(s), self.clip_len, self.dilation, num_frames) for s in starts)
        return SamplePlan(clips, {"starts": tuple(int(s) for s in starts)})


@dataclass(frozen=True)
class TSNSampler:
    """TSN (Wang et al. 2016): ``num_segments`` equal segments, one frame (or clip of
    ``clip_len``) per segment: at a random position when training, at the segment centre when
    ``rng`` is None (testing). One view per segment."""

    num_segments: int = 3
    clip_len: int = 1
    dilation: int = 1

    @property
    def min_frames(self) -> int:
        return self.num_segments

    def plan(self, num_frames: int, rng: np.random.Generator | None = None) -> SamplePlan:
        span = clip_span(self.clip_len, self.dilation)
        starts = []
        for start, end in segment_bounds(num_frames, self.num_segments):
            last_start = max(end - span, start)
            if rng is None:
                starts.append((start + last_start) // 2)
            else:
                starts.append(int(rng.integers(start, last_start + 1)))
        return SamplePlan(tuple(clip_indices(s, self.clip_len, self.dilation, num_frames) for s in starts))


@dataclass(frozen=True)
class VCLRSampler:
    """VCLR's sample (docs/methods.md): the segment tuples of :class:`SegmentTupleSampler` plus the
    SeCo anchor: the query tuple's first or last element (``info["anchor_last"]``), listed once more
    so that it gets a second, independent augmentation. Views: ``q_1..q_N, k_1..k_N, anchor``
    (frames, or clips when ``clip_len > 1``)."""

    num_segments: int = 3
    clip_len: int = 1
    dilation: int = 1

    @property
    def _tuples(self) -> SegmentTupleSampler:
        return SegmentTupleSampler(self.num_segments, self.clip_len, self.dilation)

    @property
    def min_frames(self) -> int:
        return self._tuples.min_frames

    def plan(self, num_frames: int, rng: np.random.Generator) -> SamplePlan:
        tuples = self._tuples.plan(num_frames, rng)
        if self.clip_len == 1:
            q, k = tuples.views
            views = tuple((i,) for i in q) + tuple((i,) for i in k)
        else:
            views = tuples.views
        anchor_last = int(rng.integers(0, 2))
        anchor = views[self.num_segments - 1 if anchor_last else 0]
        return SamplePlan((*views, anchor), {"anchor_last": anchor_last})
