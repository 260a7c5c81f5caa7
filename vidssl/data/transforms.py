"""Clip-consistent augmentation: the MoCo-v2 recipe of SeCo/VCLR (docs/methods.md), with
torchvision's ``transforms.v2.functional`` operations.

Inputs are clips ``(T, C, H, W)`` uint8 (a frame is a clip with ``T = 1``); outputs are normalised
float ``(T, C, H, W)``. One view draws one set of random parameters from the ``torch.Generator``
it is given (:meth:`ClipAugment.draw`) and applies it to every frame of the clip
(:meth:`ClipAugment.apply`); separate views draw independently, as the official SeCo and VCLR
code crops each frame on its own (``shared_crop=True`` gives a sample's views one crop box and
flip, as TSN's group crop). ``per_frame_jitter=True`` draws the colour jitter per frame instead
(MLFO's code does this). Given the same generator state the
output is identical: augmentation is deterministic under a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torchvision.transforms.v2.functional as F

DIRECTION_LAYOUTS = ("ssv2", "synthetic")  # their labels name a direction: MoveLeft/MoveRight, "left to right"


def flip_default(layout: str) -> float:
    """Horizontal-flip probability by default: 0 where a mirror image changes the label
    (Something-Something, the built-in motion classes), 0.5 elsewhere (the MoCo-v2 recipe)."""
    return 0.0 if layout in DIRECTION_LAYOUTS else 0.5


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _coin(g: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=g)) < p


def resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], g: torch.Generator
) -> tuple[int, int, int, int]:
    """Box ``(top, left, h, w)`` of a random resized crop (Inception-style, 10 tries then centre)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, *log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class ColorJitterParams:
    """One draw of ColorJitter: four factors and the order the four operations run in."""

    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, ...]

    @staticmethod
    def draw(strength: tuple[float, float, float, float], g: torch.Generator) -> ColorJitterParams:
        b, c, s, h = strength
        return ColorJitterParams(
            brightness=_uniform(g, max(0.0, 1 - b), 1 + b),
            contrast=_uniform(g, max(0.0, 1 - c), 1 + c),
            saturation=_uniform(g, max(0.0, 1 - s), 1 + s),
            hue=_uniform(g, -h, h),
            order=tuple(int(i) for i in torch.randperm(4, generator=g)),
        )


def normalize(clip_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return F.normalize(clip_uint8.float().div_(255.0), list(mean), list(std))


def color_jitter(images: torch.Tensor, d: ColorJitterParams) -> torch.Tensor:
    """ColorJitter of uint8 images ``(..., 3, H, W)`` with one draw, its four operations in the drawn order."""
    operations = (lambda x: F.adjust_brightness(x, d.brightness), lambda x: F.adjust_contrast(x, d.contrast),
                  lambda x: F.adjust_saturation(x, d.saturation), lambda x: F.adjust_hue(x, d.hue))
    for i in d.order:
        images = operations[i](images)
    return images


@dataclass(frozen=True)
class ViewDraw:
    """One view's random parameters, drawn by :meth:`ClipAugment.draw` in the recipe's order."""

    box: tuple[int, int, int, int]  # the resized crop: top, left, height, width
    jitter: tuple[ColorJitterParams | None, ...]  # per frame: one draw repeated unless per_frame_jitter
    gray: tuple[bool, ...]  # per frame: one draw repeated unless per_frame_gray
    blur_sigma: float | None
    flip: bool


@dataclass(frozen=True)
class ClipAugment:
    """MoCo-v2 per-view augmentation: RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4,
    0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur sigma 0.1-2 with p = 0.5, horizontal flip,
    then normalisation with ``mean``/``std`` (recorded in checkpoints and exports). Every step
    works on uint8 as the official pipelines' PIL images do (rounding after each one).

    ``aug(clip, g)`` augments one view; the loader calls :meth:`draw` per view and :meth:`apply`
    once per batch, with the same result."""

    size: int = 224
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    p_jitter: float = 0.8
    p_gray: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    p_blur: float = 0.5
    p_flip: float = 0.5
    per_frame_jitter: bool = False
    per_frame_gray: bool = False
    shared_crop: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def blur_kernel(self) -> int:
        k = max(int(0.1 * self.size), 3)  # 10% of the crop, as MoCo-v2 (23 px at 224)
        return k if k % 2 == 1 else k + 1

    def __call__(self, clip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply(clip, self.draw(clip, g))

    def views(self, clips: list[torch.Tensor], g: torch.Generator) -> list[torch.Tensor]:
        """One sample's views, each with its own draws; with ``shared_crop``, every view takes the
        first one's crop box and flip (TSN's group crop; colour stays per view)."""
        draws = [self.draw(clip, g) for clip in clips]
        if self.shared_crop:
            draws = [replace(d, box=draws[0].box, flip=draws[0].flip) for d in draws]
        return [self.apply(clip, d) for clip, d in zip(clips, draws, strict=True)]

    def draw(self, clip: torch.Tensor, g: torch.Generator) -> ViewDraw:
        """The random parameters of one view of ``clip`` (``(T, 3, H, W)`` uint8), from ``g``."""
        if clip.ndim != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"expected a (T, 3, H, W) uint8 clip, got {tuple(clip.shape)} {clip.dtype}")
        box = resized_crop_params(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, g)
        if self.per_frame_jitter:
            jitter = tuple(self._draw_jitter(g) for _ in range(clip.shape[0]))
        else:
            jitter = (self._draw_jitter(g),) * clip.shape[0]
        frames = clip.shape[0]
        gray = tuple(_coin(g, self.p_gray) for _ in range(frames)) if self.per_frame_gray else (
            (_coin(g, self.p_gray),) * frames)
        sigma = _uniform(g, *self.blur_sigma) if _coin(g, self.p_blur) else None
        return ViewDraw(box, jitter, gray, sigma, flip=_coin(g, self.p_flip))

    def _draw_jitter(self, g: torch.Generator) -> ColorJitterParams | None:
        return ColorJitterParams.draw(self.jitter, g) if _coin(g, self.p_jitter) else None

    def apply(self, clip: torch.Tensor, d: ViewDraw) -> torch.Tensor:
        """``clip`` augmented with the draws ``d``, as normalised float ``(T, C, size, size)``."""
        x = F.resized_crop(clip, *d.box, [self.size, self.size], antialias=True)
        if all(j is d.jitter[0] for j in d.jitter):  # one draw for the whole clip
            x = x if d.jitter[0] is None else color_jitter(x, d.jitter[0])
        else:  # per-frame jitter
            x = torch.stack([f if j is None else color_jitter(f, j) for f, j in zip(x, d.jitter, strict=True)])
        if all(d.gray):
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        elif any(d.gray):  # per-frame grey
            x = torch.stack([F.rgb_to_grayscale(f, num_output_channels=3) if gray else f
                             for f, gray in zip(x, d.gray, strict=True)])
        if d.blur_sigma is not None:
            x = F.gaussian_blur(x, [self.blur_kernel] * 2, [d.blur_sigma] * 2)
        if d.flip:
            x = F.horizontal_flip(x)
        return normalize(x, self.mean, self.std)
