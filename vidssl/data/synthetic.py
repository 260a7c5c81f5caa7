"""Built-in synthetic videos with real temporal structure, deterministic by seed.

Each video shows a textured background that pans, one or two distractor objects, and one *actor*
object that performs an action. Three label sets come with every video:

- **motion** (10 classes) built from reversal pairs: MoveLeft/MoveRight, MoveUp/MoveDown,
  Approach/Recede, RotateCW/RotateCCW, Appear/Vanish. The second class of each pair follows the
  first's path backwards, so the frames of two twins look alike and only temporal order separates
  them: the role Something-Something plays in the papers.
- **appearance** (5 classes): the actor's shape (Circle, Square, Triangle, Cross, Ring).
- **arrow** (2 classes): Forward, or Backward (the video played in reverse); every other clip of
  each recording group is played backwards. The other label sets' videos all play forwards.

**Dynamics.** Real video has an arrow of time, and an order objective can only learn where the
data has one. ``dynamics="arrow"`` (the default) makes every video irreversible, as real scenes are:

- the actor's motion decelerates, as with friction (progress ``1 - (1 - u)^2``);
- the actor leaves **ink** where it has been (each of ``INK_STEPS`` moments deposits a faint stamp
  of its silhouette): ink only accumulates, so a single frame shows how far into the video it is
  and, for a moving actor, which way it came;
- the distractors **fall** under gravity, bounce with damping and come to rest on the floor.

A twin is then not the other's frames reversed: played backwards, the ink would vanish, motion
would accelerate and objects would leap off the floor. ``dynamics="reversible"`` is the control:
constant speeds, no ink, distractors drifting in straight lines, so a MoveRight video is a
MoveLeft video played backwards and a video and its reversal are equally likely (docs/data.md).

Videos come in recording *groups* as UCF101 does: the (default 2) clips of one group share the
scene (background texture and colours, actor colours and texture), so groups must not be split
across train and test. Group-mates differ in the actor's shape and the layout, which is what makes
them useful negatives for instance discrimination. Group ``g`` of every motion class is filmed in
the same scene, so the scene says nothing about the motion: a classifier must read the motion.
(With a scene per class and group, a supervised network learnt the 4 training scenes of each class
and reached 20% on unseen ones; with shared scenes 81%, the same recipe; docs/data.md.)
Frames are a pure function of ``(seed, video, frame index)``: a reader renders only the frames it is
asked for. ``write_ucf101`` writes real mp4 files in the UCF101 layout with split files.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidssl.data.records import VideoRecord, VideoSource

MOTIONS = (
    "MoveLeft", "MoveRight", "MoveUp", "MoveDown", "Approach",
    "Recede", "RotateCW", "RotateCCW", "Appear", "Vanish",
)
# MOTIONS[2k + 1] is MOTIONS[2k] played backwards.
MOTION_PAIRS = [(2 * k, 2 * k + 1) for k in range(len(MOTIONS) // 2)]
FLIP_INVARIANT_PAIRS = [(2, 3), (4, 5)]  # MoveUp/MoveDown, Approach/Recede: a mirror image keeps the class
SHAPES = ("Circle", "Square", "Triangle", "Cross", "Ring")
ARROWS = ("Forward", "Backward")
LABEL_SETS = ("motion", "appearance", "arrow")
DYNAMICS = ("arrow", "friction", "reversible")
INK_STEPS = 24  # moments at which the actor deposits ink (evenly spaced over the video)
INK_ALPHA = 0.15  # opacity of one deposit; deposits compound
INK_SPREAD = 0.6  # a deposit's growth over the whole video, in actor sizes
GRAVITY = 12.0  # frame heights per (video duration)^2: a drop from the top lands at u ~ 0.4
DROP_SCALE = 1.6  # dropped objects are this much larger than drifting ones, so their fall is visible
RESTITUTION = 0.4  # the share of its speed a falling object keeps at a bounce
SCHEME = "synth://"


def ease_out(u: float) -> float:
    """Decelerating progress from 0 to 1 (constant deceleration, as friction)."""
    return 1.0 - (1.0 - u) ** 2


def fall(start: np.ndarray, vx: float, radius: float, size: int, steps: int = 256) -> np.ndarray:
    """Centres ``(steps + 1, 2)`` at times ``0, 1/steps, ..., 1`` of an object dropped at ``start``
    with horizontal speed ``vx`` (pixels per video): it falls under ``GRAVITY``, bounces off the
    floor and the walls keeping ``RESTITUTION`` of its speed, and comes to rest on the floor."""
    g, dt = GRAVITY * size, 1.0 / steps
    floor, left, right = size - radius, radius, size - radius
    x, y = float(start[0]), float(start[1])
    vy, resting = 0.0, False
    out = np.empty((steps + 1, 2))
    out[0] = x, y
    for n in range(1, steps + 1):
        if not resting:
            vy += g * dt
            y += vy * dt
            if y >= floor:  # bounce; too slow to rise a pixel again: rest
                y, vy, vx = floor, -RESTITUTION * vy, RESTITUTION * vx
                resting = vy * vy < 2 * g
        x += vx * dt
        if not left <= x <= right:
            x, vx = min(max(x, left), right), -vx
        out[n] = x, y
    return out


OBJECT_EXTENT = 1.15  # every _shape_mask lies in this radius (the square's corners: 0.8 * sqrt(2))


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask of a unit-size shape in the object's local coordinates."""
    if shape == "Circle":
        return x * x + y * y < 1.0
    if shape == "Square":
        return np.maximum(np.abs(x), np.abs(y)) < 0.8
    if shape == "Triangle":
        s3 = math.sqrt(3.0)
        return (y > -0.5) & (s3 * x + y < 1.0) & (-s3 * x + y < 1.0)
    if shape == "Cross":
        ax, ay = np.abs(x), np.abs(y)
        return ((ax < 0.3) & (ay < 0.95)) | ((ay < 0.3) & (ax < 0.95))
    if shape == "Ring":
        r2 = x * x + y * y
        return (r2 < 1.0) & (r2 > 0.36)
    raise ValueError(f"unknown shape {shape!r}")


def _texture(kind: int, freq: float, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Where the texture takes its first colour, in local coordinates: stripes, checker, or
    ``None`` for solid (the first colour everywhere)."""
    if kind == 0:
        return np.sin(freq * x) > 0
    if kind == 1:
        return (np.sin(freq * x) > 0) ^ (np.sin(freq * y) > 0)
    return None


def _placement(obj, cx: float, cy: float, scale: float, angle: float, xx: np.ndarray,
               yy: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """The object's bounding box in the frame (``None`` if off-frame) and the local coordinates of
    its pixels: every shape lies within ``OBJECT_EXTENT`` radii of its centre, whatever its rotation."""
    r = obj.radius * scale
    reach = OBJECT_EXTENT * r
    top, bottom = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, xx.shape[0])
    left, right = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, xx.shape[1])
    if top >= bottom or left >= right:
        return None
    box = (slice(top, bottom), slice(left, right))
    dx, dy = (xx[box] - cx) / r, (yy[box] - cy) / r
    c, s = math.cos(angle), math.sin(angle)
    return box, c * dx + s * dy, -s * dx + c * dy


@dataclass(frozen=True)
class _Object:
    shape: str
    colors: tuple[np.ndarray, np.ndarray]
    texture: int
    freq: float
    radius: float


class FrameCache:
    """Rendered frames kept in this process up to ``max_bytes`` (then no more are added). Every
    encoder an evaluation compares asks for the same frames, and so does every epoch of a run
    without loader workers. Size: ``VIDSSL_SYNTH_CACHE_MB`` (default 512; 0 disables)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.frames: dict[tuple, np.ndarray] = {}

    def get(self, key: tuple) -> np.ndarray | None:
        return self.frames.get(key)

    def put(self, key: tuple, frame: np.ndarray) -> None:
        if self.bytes + frame.nbytes <= self.max_bytes and key not in self.frames:
            self.frames[key] = frame
            self.bytes += frame.nbytes

    def clear(self) -> None:
        """Forget every frame (``vidssl bench speed`` times first epochs after this)."""
        self.frames.clear()
        self.bytes = 0


FRAME_CACHE = FrameCache(int(os.environ.get("VIDSSL_SYNTH_CACHE_MB", "512")) * 2**20)


@dataclass(frozen=True)
class SyntheticVideos:
    """The built-in dataset. ``labels`` picks the label set the records carry."""

    num_videos: int = 400
    size: int = 64
    frames: int = 64
    seed: int = 0
    labels: str = "motion"
    clips_per_group: int = 2
    test_fraction: float = 0.25
    fps: float = 25.0
    dynamics: str = "arrow"

    def __post_init__(self) -> None:
        if self.labels not in LABEL_SETS:
            raise ValueError(f"labels must be one of {LABEL_SETS}, got {self.labels!r}")
        if self.dynamics not in DYNAMICS:
            raise ValueError(f"dynamics must be one of {DYNAMICS}, got {self.dynamics!r}")
        if self.num_videos < 1 or self.size < 8 or self.frames < 1:
            raise ValueError("need num_videos >= 1, size >= 8 and frames >= 1")

    @property
    def irreversible(self) -> bool:
        """Decelerating actor and falling distractors (``arrow`` adds ink; ``friction`` has none)."""
        return self.dynamics != "reversible"

    # ----- catalogue -------------------------------------------------------------------------
    def motion_of(self, i: int) -> int:
        return i % len(MOTIONS)

    def shape_of(self, i: int) -> int:
        return int(np.random.default_rng([self.seed, i, 7]).integers(len(SHAPES)))

    def group_of(self, i: int) -> int:
        """1-based group within the video's motion class (UCF101's ``gNN``)."""
        return (i // len(MOTIONS)) // self.clips_per_group + 1

    def clip_of(self, i: int) -> int:
        return (i // len(MOTIONS)) % self.clips_per_group + 1

    def is_test(self, i: int) -> bool:
        """The last ``round(test_fraction * groups)`` groups of each class (at least one when the
        class has two or more groups) are test; whole groups, as UCF101's splits. The number of
        groups is read from the class's video count, so ``num_videos`` must give each class at least
        ``clips_per_group + 1`` videos for a test split to exist."""
        per_class = len(range(self.motion_of(i), self.num_videos, len(MOTIONS)))
        groups = -(-per_class // self.clips_per_group)
        n_test = max(1, round(self.test_fraction * groups)) if groups > 1 and self.test_fraction > 0 else 0
        return self.group_of(i) > groups - n_test

    def is_backward(self, i: int) -> bool:
        """Whether video ``i`` plays in reverse: only in the arrow label set, every other clip of a
        recording group, group after group, class after class: both splits hold both labels."""
        return self.labels == "arrow" and (self.motion_of(i) + self.group_of(i) + self.clip_of(i)) % 2 == 1

    def class_names(self) -> list[str]:
        return list({"motion": MOTIONS, "appearance": SHAPES, "arrow": ARROWS}[self.labels])

    def label_of(self, i: int) -> int:
        if self.labels == "arrow":
            return int(self.is_backward(i))
        return self.motion_of(i) if self.labels == "motion" else self.shape_of(i)

    def name_of(self, i: int) -> str:
        return f"v_{MOTIONS[self.motion_of(i)]}_g{self.group_of(i):02d}_c{self.clip_of(i):02d}"

    def source(self, subset: str = "all") -> VideoSource:
        """Records of ``subset`` (``train``, ``test`` or ``all``), paths ``synth://<index>``."""
        if subset not in ("train", "test", "all"):
            raise ValueError(f"subset must be train, test or all, got {subset!r}")
        records = [
            VideoRecord(
                path=f"{SCHEME}{i}",
                label=self.label_of(i),
                group=f"{MOTIONS[self.motion_of(i)]}_g{self.group_of(i):02d}",
                num_frames=self.frames,
            )
            for i in range(self.num_videos)
            if subset == "all" or self.is_test(i) == (subset == "test")
        ]
        return VideoSource(records, self.class_names(), root="builtin:synthetic", layout="synthetic")

    # ----- rendering -------------------------------------------------------------------------
    def _scene(self, i: int) -> dict:
        g = np.random.default_rng([self.seed, self.group_of(i)])
        grey = np.full(3, 128.0)
        # A saturated actor colour (one channel high, one low) and the same hue darker for its
        # stripes: the silhouette stays clear and rotation stays visible.
        channels = g.permutation(3)
        actor = np.empty(3)
        actor[channels] = [g.uniform(200, 255), g.uniform(0, 60), g.uniform(0, 255)]
        return {
            "bg_colors": (0.5 * grey + 0.5 * g.uniform(0, 255, 3), 0.5 * grey + 0.5 * g.uniform(0, 255, 3)),
            "bg_freqs": g.uniform(0.15, 0.5, 2),
            "bg_angles": g.uniform(0, math.pi, 2),
            "actor_colors": (actor, 0.6 * actor),
            "ink": 0.35 * actor,
            "actor_texture": int(g.integers(2)),  # striped or checked: rotation must be visible
            "actor_freq": float(g.uniform(3, 6)),
        }

    def video_params(self, i: int) -> dict:
        scene = self._scene(i)
        g = np.random.default_rng([self.seed, i])
        s = self.size
        actor = _Object(
            SHAPES[self.shape_of(i)], scene["actor_colors"], scene["actor_texture"],
            scene["actor_freq"], float(g.uniform(0.22, 0.28) * s),
        )
        distractors = []
        for _ in range(int(g.integers(1, 3))):
            radius = float(g.uniform(0.05, 0.08) * s * (DROP_SCALE if self.irreversible else 1.0))
            obj = _Object(SHAPES[int(g.integers(len(SHAPES)))], (g.uniform(0, 255, 3), g.uniform(0, 255, 3)),
                          int(g.integers(3)), float(g.uniform(3, 8)), radius)
            if self.irreversible:  # dropped from the upper half: falls, bounces, rests
                start = np.array([g.uniform(0.1, 0.9), g.uniform(0.1, 0.45)]) * s
                path = fall(start, float(g.uniform(-0.4, 0.4) * s), obj.radius, s)
            else:  # a straight drift at constant speed
                start, disp = g.uniform(0.1, 0.9, 2) * s, g.uniform(-0.3, 0.3, 2) * s
                path = start + disp * np.linspace(0, 1, 257)[:, None]
            distractors.append((obj, path))
        return {
            "scene": scene,
            "actor": actor,
            "distractors": distractors,
            "bg_velocity": g.uniform(-0.25, 0.25, 2) * s,
            "actor_pos": g.uniform(0.35, 0.65, 2) * s,
            "travel": float(g.uniform(0.25, 0.4) * s),
            "angle0": float(g.uniform(0, 2 * math.pi)),
        }

    def actor_state(self, motion: int, u: float, p: dict) -> tuple[float, float, float, float, float]:
        """(cx, cy, scale, angle, alpha) of the actor at normalised time u in [0, 1]. With arrow
        dynamics both twins decelerate; reversible ones move at constant speed, and a twin is the
        other played backwards."""
        pair, backwards = divmod(motion, 2)
        progress = ease_out(u) if self.irreversible else u
        v = 1.0 - progress if backwards else progress
        cx, cy = p["actor_pos"]
        d = p["travel"]
        scale, angle, alpha = 1.0, p["angle0"], 1.0
        if pair == 0:  # MoveLeft: right to left
            cx = cx + d / 2 - d * v
        elif pair == 1:  # MoveUp: bottom to top
            cy = cy + d / 2 - d * v
        elif pair == 2:  # Approach: grows
            scale = 0.5 + 1.0 * v
        elif pair == 3:  # RotateCW (image coordinates: y down, so +angle turns clockwise)
            angle = angle + math.pi * v
        else:  # Appear: fades in
            alpha = v
        return cx, cy, scale, angle, alpha

    @staticmethod
    def paint(img: np.ndarray, obj: _Object, cx: float, cy: float, scale: float, angle: float,
               alpha: float, xx: np.ndarray, yy: np.ndarray) -> None:
        """Alpha-blend ``obj`` into ``img`` (in place), on the pixels of its bounding box only."""
        placed = _placement(obj, cx, cy, scale, angle, xx, yy)
        if placed is None or alpha <= 0:
            return
        box, lx, ly = placed
        mask = _shape_mask(obj.shape, lx, ly)
        if not mask.any():
            return
        img = img[box]
        # selections where the blend's weights are 0 or 1, which give the blend's values exactly
        tex = _texture(obj.texture, obj.freq, lx, ly)
        color = obj.colors[0] if tex is None else np.where(tex[..., None], obj.colors[0], obj.colors[1])
        if alpha == 1.0:
            img[:] = np.where(mask[..., None], color, img)
        else:
            a = np.float32(alpha) * mask[..., None]
            img[:] = img * (1 - a) + color * a

    def _ink(self, img: np.ndarray, motion: int, u: float, p: dict, xx: np.ndarray, yy: np.ndarray) -> None:
        """Stain ``img`` where the actor has been: a stamp of its silhouette, weighted by its
        opacity, at each of the moments ``k / INK_STEPS <= u``; stamps compound, so ink only grows."""
        actor = p["actor"]
        dose = np.zeros(img.shape[:2], np.float32)
        for k in range(math.floor(u * INK_STEPS + 1e-9) + 1):
            cx, cy, scale, angle, alpha = self.actor_state(motion, k / INK_STEPS, p)
            spread = 1.0 + INK_SPREAD * (u - k / INK_STEPS)  # a stain widens as it soaks in
            placed = _placement(actor, cx, cy, scale * spread, angle, xx, yy)
            if placed is not None and alpha > 0:
                box, lx, ly = placed
                dose[box] += alpha * _shape_mask(actor.shape, lx, ly)
        a = (1 - (1 - INK_ALPHA) ** dose)[..., None]
        img[:] = img * (1 - a) + p["scene"]["ink"] * a

    def _frame(self, i: int, u: float, p: dict, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """The frame of video ``i`` at normalised time ``u``, (size, size, 3) uint8."""
        img = self.backdrop(i, u, p, xx, yy)
        self.paint(img, p["actor"], *self.actor_state(self.motion_of(i), u, p), xx, yy)
        return np.clip(img, 0, 255).astype(np.uint8)

    def backdrop(self, i: int, u: float, p: dict, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        """Video ``i``'s frame at time ``u`` without the actor, (size, size, 3) float."""
        scene = p["scene"]
        bx, by = xx + p["bg_velocity"][0] * u, yy + p["bg_velocity"][1] * u
        w = np.zeros_like(xx)
        for f, a in zip(scene["bg_freqs"], scene["bg_angles"], strict=True):
            w += np.sin(f * (math.cos(a) * bx + math.sin(a) * by))
        w = (0.5 + 0.25 * w / 2)[..., None]  # a soft background: the actor must stand out
        img = w * scene["bg_colors"][0] + (1 - w) * scene["bg_colors"][1]
        if self.dynamics == "arrow":  # friction: the same motion, no ink
            self._ink(img, self.motion_of(i), u, p, xx, yy)
        for obj, path in p["distractors"]:
            self.paint(img, obj, *path[round(u * (len(path) - 1))], 1.0, 0.0, 1.0, xx, yy)
        return img

    def render(self, i: int, indices: Sequence[int]) -> torch.Tensor:
        """Frames ``indices`` of video ``i`` as ``(N, 3, size, size)`` uint8."""
        if not 0 <= i < self.num_videos:
            raise IndexError(f"synthetic video {i} outside [0, {self.num_videos})")
        s, last = self.size, self.frames - 1
        out = np.empty((len(indices), s, s, 3), dtype=np.uint8)
        video_key = (self.seed, s, self.frames, self.clips_per_group, self.dynamics, i)  # what a frame depends on
        p = None
        for n, t in enumerate(indices):
            t = last - t if self.is_backward(i) else t  # a backward video shows the forward frames
            cached = FRAME_CACHE.get((*video_key, t))
            if cached is not None:
                out[n] = cached
                continue
            if p is None:
                p = self.video_params(i)
                yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
            out[n] = self._frame(i, t / max(last, 1), p, xx, yy)
            FRAME_CACHE.put((*video_key, t), out[n].copy())
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    def open(self, record: VideoRecord) -> SyntheticReader:
        """Reader for a record of :meth:`source` (the dataset's reader factory)."""
        return SyntheticReader(self, record.path)

    # ----- writing -----------------------------------------------------------------------------
    def write_ucf101(self, out: str | os.PathLike[str], codec: str = "libx264") -> Path:
        """Write every video as an mp4 in the UCF101 layout: ``<Class>/v_<Class>_gNN_cMM.mp4``,
        ``classInd.txt``, ``trainlist01.txt`` / ``testlist01.txt`` (motion labels; whole groups in
        test), and generic ``path label`` lists with their class files for the other label sets:
        ``appearance_{train,test}list01.txt`` and ``arrow_{train,test}list01.txt`` (whose Backward
        videos are written reversed under ``Backward/``), plus ``synth.json`` (the settings)."""
        from vidssl.data.encode import write_video

        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        motion = SyntheticVideos(**{**self.__dict__, "labels": "motion"})
        arrow = SyntheticVideos(**{**self.__dict__, "labels": "arrow"})
        lists: dict[str, list[str]] = {k: [] for k in ("train", "test", "appearance_train", "appearance_test",
                                                      "arrow_train", "arrow_test")}
        for i in range(self.num_videos):
            cls = MOTIONS[self.motion_of(i)]
            rel = f"{cls}/{self.name_of(i)}.mp4"
            (root / cls).mkdir(exist_ok=True)
            write_video(root / rel, motion.render(i, range(self.frames)), fps=self.fps, codec=codec)
            subset = "test" if self.is_test(i) else "train"
            lists[subset].append(rel if subset == "test" else f"{rel} {self.motion_of(i) + 1}")
            lists[f"appearance_{subset}"].append(f"{rel} {self.shape_of(i)}")
            if arrow.is_backward(i):
                rel = f"Backward/{self.name_of(i)}.mp4"
                (root / "Backward").mkdir(exist_ok=True)
                write_video(root / rel, arrow.render(i, range(self.frames)), fps=self.fps, codec=codec)
            lists[f"arrow_{subset}"].append(f"{rel} {arrow.label_of(i)}")
        (root / "classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(MOTIONS)))
        for name, classes in (("appearance", SHAPES), ("arrow", ARROWS)):
            (root / f"{name}_classInd.txt").write_text("".join(f"{k + 1} {c}\n" for k, c in enumerate(classes)))
        for key, lines in lists.items():
            (root / f"{key}list01.txt").write_text("".join(line + "\n" for line in lines))
        settings = {k: v for k, v in self.__dict__.items() if k != "labels"}
        (root / "synth.json").write_text(json.dumps(settings, indent=2) + "\n")
        return root


class SyntheticReader:
    """A :class:`~vidssl.data.decoders.VideoReader` over one synthetic video."""

    def __init__(self, videos: SyntheticVideos, path: str) -> None:
        if not path.startswith(SCHEME):
            raise ValueError(f"not a synthetic video path: {path!r}")
        self.path = path
        self._videos = videos
        self._index = int(path[len(SCHEME):])
        self.num_frames = videos.frames
        self.fps = videos.fps

    def get_frames(self, indices: Sequence[int]) -> torch.Tensor:
        bad = [i for i in indices if not 0 <= i < self.num_frames]
        if bad:
            raise IndexError(f"{self.path}: frame indices {bad[:5]} outside [0, {self.num_frames})")
        return self._videos.render(self._index, list(indices))

    def close(self) -> None:
        pass
