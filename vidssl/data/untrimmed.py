"""Built-in untrimmed videos in the ActivityNet v1.3 layout, for the untrimmed protocols
(recognition, feature extraction, temporal action localisation) with no download.

Each video shows one scene of the built-in motion videos (``vidssl.data.synthetic``, friction
dynamics: no ink) for ``frames`` frames: background stretches, in which the actor is absent and
only the background and the distractors move, and 1-3 *instances* of the video's action, in which
the actor appears and performs its motion class (MoveLeft, RotateCW, ...) from start to end. The
instances are the annotations, exact to the frame: ``[first / fps, (last + 1) / fps]`` seconds.
The video's class is its action; train (``training``) and test (``validation``) videos come from
different scenes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from vidssl.data.synthetic import MOTIONS, SyntheticVideos


@dataclass(frozen=True)
class UntrimmedVideos:
    num_videos: int = 60
    size: int = 64
    frames: int = 240
    fps: float = 25.0
    seed: int = 0
    test_fraction: float = 1 / 3

    def __post_init__(self) -> None:
        if self.num_videos < 1 or self.size < 16 or self.frames < 48:
            raise ValueError("need num_videos >= 1, size >= 16 and frames >= 48")

    @property
    def scenes(self) -> SyntheticVideos:
        """The motion videos whose scenes, actors and motions the untrimmed videos reuse: video
        ``k`` is scene ``k`` of this set (one clip per group, so every video has its own scene)."""
        return SyntheticVideos(num_videos=self.num_videos, size=self.size, frames=self.frames, seed=self.seed,
                               clips_per_group=1, dynamics="friction")

    def is_test(self, k: int) -> bool:
        return k >= round(self.num_videos * (1 - self.test_fraction))

    def video_id(self, k: int) -> str:
        return f"synth{self.seed}_{k:04d}"

    def instances(self, k: int) -> list[tuple[int, int]]:
        """``[first, last + 1)`` frames of each action instance: 1-3 of them, 15-30% of the video
        each, apart from each other and from the ends by at least 8 frames of background."""
        g = np.random.default_rng([self.seed, 11, k])
        n = int(g.integers(1, 4))
        lengths = [int(g.uniform(0.15, 0.3) * self.frames) for _ in range(n)]
        slack = self.frames - sum(lengths) - 8 * (n + 1)
        while slack < 0:  # too long together: drop the last instance
            lengths.pop()
            slack = self.frames - sum(lengths) - 8 * (len(lengths) + 1)
        gaps = np.diff(np.sort(np.concatenate([[0, slack], g.uniform(0, slack, len(lengths))])))
        out, t = [], 0
        for gap, length in zip(gaps, lengths, strict=False):
            t += 8 + int(gap)
            out.append((t, t + length))
            t += length
        return out

    def render(self, k: int) -> torch.Tensor:
        """Video ``k``, ``(frames, 3, size, size)`` uint8."""
        scenes = self.scenes
        p = scenes.video_params(k)
        yy, xx = np.mgrid[0:self.size, 0:self.size].astype(np.float32)
        spans = self.instances(k)
        out = np.empty((self.frames, self.size, self.size, 3), dtype=np.uint8)
        for t in range(self.frames):
            img = scenes.backdrop(k, t / (self.frames - 1), p, xx, yy)
            for first, end in spans:
                if first <= t < end:
                    u = (t - first) / max(end - first - 1, 1)
                    scenes.paint(img, p["actor"], *scenes.actor_state(scenes.motion_of(k), u, p), xx, yy)
            out[t] = np.clip(img, 0, 255).astype(np.uint8)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def annotation(self, k: int) -> dict:
        label = MOTIONS[self.scenes.motion_of(k)]
        return {"subset": "validation" if self.is_test(k) else "training",
                "duration": self.frames / self.fps, "resolution": f"{self.size}x{self.size}", "url": "",
                "annotations": [{"segment": [first / self.fps, end / self.fps], "label": label}
                                for first, end in self.instances(k)]}

    def write_activitynet(self, out: str | os.PathLike[str], codec: str = "libx264") -> Path:
        """``out/v_<id>.mp4`` and ``out/activity_net.v1-3.min.json``; returns the JSON's path."""
        from vidssl.data.encode import write_video

        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        database = {}
        for k in range(self.num_videos):
            write_video(root / f"v_{self.video_id(k)}.mp4", self.render(k), fps=self.fps, codec=codec)
            database[self.video_id(k)] = self.annotation(k)
        path = root / "activity_net.v1-3.min.json"
        path.write_text(json.dumps({"version": "VERSION 1.3 (vidssl synthetic)", "taxonomy": [],
                                    "database": database, "vidssl_settings": asdict(self)}, indent=1) + "\n")
        return path
