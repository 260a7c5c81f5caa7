"""Clip-consistent augmentation (the MoCo-v2 recipe of SeCo/VCLR, DESIGN.md §2) and evaluation
transforms.

Inputs are clips ``(T, C, H, W)`` uint8 (a frame is a clip with ``T = 1``); outputs are normalised
float ``(T, C, H, W)``. One call draws one set of random parameters from the ``torch.Generator``
it is given and applies it to every frame of the clip; separate calls (views) draw independently.
``per_frame_jitter=True`` draws the colour jitter per frame instead (MLFO's code does this).
Given the same generator state the output is identical: augmentation is deterministic under a seed.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as NF
import torchvision.transforms.v2.functional as F

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

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        ops = (
            lambda t: adjust_brightness(t, self.brightness),
            lambda t: adjust_contrast(t, self.contrast),
            lambda t: adjust_saturation(t, self.saturation),
            lambda t: adjust_hue(t, self.hue),
        )
        for i in self.order:
            x = ops[i](x)
        return x


@functools.lru_cache(maxsize=16)
def _channel_constants(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def normalize(clip_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (clip_uint8.float().div_(255.0) - _channel_constants(tuple(mean))) / _channel_constants(tuple(std))


# The loader's per-view operations at 32 px cost their number, not their size: the colour operations
# below are torchvision's uint8 arithmetic (the same float32 operations, so the same results)
# without its dispatch layers, and the hue shift a closed form. Tests compare each with torchvision.


def resized_crop(clip: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """torchvision's ``resized_crop(..., antialias=True)`` of a uint8 clip ``(T, C, H, W)`` to
    ``size x size``: bilinear, antialiased, on uint8 directly (as torchvision on CPU)."""
    x = clip[..., top:top + height, left:left + width]
    if (height, width) == (size, size):
        return x
    return NF.interpolate(x, size=[size, size], mode="bilinear", align_corners=False, antialias=True)


def _grey_level(image: torch.Tensor) -> torch.Tensor:
    """torchvision's luma of uint8 RGB images as a floored float ``(..., 1, H, W)``."""
    r, g, b = image.unbind(-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: float) -> torch.Tensor:
    """torchvision's uint8 blend ``ratio * image + (1 - ratio) * other``, clamped and truncated."""
    return image.mul(ratio).add_(other, alpha=1.0 - ratio).clamp_(0, 255).to(torch.uint8)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's ``adjust_brightness`` of uint8 RGB images."""
    return image.mul(factor).clamp_(0, 255).to(torch.uint8)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's ``adjust_contrast`` of uint8 RGB images: a blend with each image's mean grey."""
    return _blend(image, _grey_level(image).mean((-3, -2, -1), keepdim=True), factor)


def adjust_saturation(image: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's ``adjust_saturation`` of uint8 RGB images: a blend with the grey image."""
    return _blend(image, _grey_level(image), factor)


_CHANNEL_PHASES = (5.0, 3.0, 1.0)  # n of the HSV -> RGB closed form for R, G, B


def adjust_hue(image: torch.Tensor, factor: float) -> torch.Tensor:
    """torchvision's ``adjust_hue`` of an RGB clip ``(..., 3, H, W)`` (uint8, or float in ``[0, 1]``;
    the same dtype back, converted as torchvision does): the HSV hue shifted by ``factor`` turns.
    Value ``v = max`` and chroma ``c = max - min`` do not change, so each channel is
    ``v - c * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h) mod 6`` and ``n = 5, 3, 1`` for R,
    G, B (the closed form of HSV -> RGB): far fewer operations than torchvision's round trip
    through HSV, which dominated the loader at 32 px."""
    x = image if image.is_floating_point() else image.float().mul_(1.0 / 255)
    r, g, b = x.unbind(-3)
    v = x.amax(-3)
    c = v - x.amin(-3)
    safe = torch.where(c > 0, c, 1.0)
    h6 = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    k = torch.remainder(_channel_constants(_CHANNEL_PHASES) + (h6 + 6 * factor).unsqueeze(-3), 6)
    out = v.unsqueeze(-3) - c.unsqueeze(-3) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return out if image.is_floating_point() else out.mul_(256 - 1e-3).to(image.dtype)


def gaussian_blur(image: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of a clip ``(T, C, H, W)`` (uint8 results rounded, as torchvision's):
    torchvision's kernel (``exp(-d^2 / 2 sigma^2)`` at offsets ``d = -(k-1)/2 .. (k-1)/2``,
    normalised) and reflect padding, applied separably as weighted sums of shifted slices (a
    depthwise convolution costs ~1 ms per 32 px frame on CPU)."""
    x = image if image.is_floating_point() else image.float()
    r = (kernel - 1) / 2
    weights = [math.exp(-0.5 * ((i - r) / sigma) ** 2) for i in range(kernel)]
    total = sum(weights)
    weights = [w / total for w in weights]
    pad, (h, w) = kernel // 2, x.shape[-2:]
    if pad >= min(h, w):
        raise ValueError(f"blur kernel {kernel} is too large for a {h}x{w} image")
    for dim, padding in ((-1, [pad, pad, 0, 0]), (-2, [0, 0, pad, pad])):  # along the width, then the height
        y = NF.pad(x, padding, mode="reflect")
        x = y.narrow(dim, 0, image.shape[dim]) * weights[0]
        for i in range(1, kernel):
            x.add_(y.narrow(dim, i, image.shape[dim]), alpha=weights[i])
    return x if image.is_floating_point() else x.round_().to(image.dtype)


@dataclass(frozen=True)
class ClipAugment:
    """MoCo-v2 per-view augmentation: RandomResizedCrop(scale 0.2-1), ColorJitter(0.4, 0.4, 0.4,
    0.1) with p = 0.8, grayscale p = 0.2, Gaussian blur sigma 0.1-2 with p = 0.5, horizontal flip,
    then normalisation with ``mean``/``std`` (recorded in checkpoints and exports). Every step
    works on uint8 as the official pipelines' PIL images do (rounding after each one)."""

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
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def blur_kernel(self) -> int:
        k = max(int(0.1 * self.size), 3)  # 10% of the crop, as MoCo-v2 (23 px at 224)
        return k if k % 2 == 1 else k + 1

    def __call__(self, clip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if clip.ndim != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"expected a (T, 3, H, W) uint8 clip, got {tuple(clip.shape)} {clip.dtype}")
        top, left, h, w = resized_crop_params(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, g)
        x = resized_crop(clip, top, left, h, w, self.size)
        if self.per_frame_jitter:
            frames = []
            for frame in x:
                if _coin(g, self.p_jitter):
                    frame = ColorJitterParams.draw(self.jitter, g).apply(frame)
                frames.append(frame)
            x = torch.stack(frames)
        elif _coin(g, self.p_jitter):
            x = ColorJitterParams.draw(self.jitter, g).apply(x)
        if _coin(g, self.p_gray):
            x = F.rgb_to_grayscale(x, num_output_channels=3)
        if _coin(g, self.p_blur):
            sigma = _uniform(g, *self.blur_sigma)
            x = gaussian_blur(x, self.blur_kernel, sigma)
        if _coin(g, self.p_flip):
            x = F.horizontal_flip(x)
        return normalize(x, self.mean, self.std)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation: resize the short side to ``resize``, centre crop ``crop`` (SeCo: 256 → 224),
    normalise. Deterministic; the generator argument is accepted and ignored."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, clip: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        x = F.resize(clip, [self.resize], antialias=True)
        x = F.center_crop(x, [self.crop, self.crop])
        return normalize(x, self.mean, self.std)
