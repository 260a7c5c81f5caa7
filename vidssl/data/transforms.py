"""Clip-consistent augmentation (the MoCo-v2 recipe of SeCo/VCLR, DESIGN.md §2) and evaluation
transforms.

Inputs are clips ``(T, C, H, W)`` uint8 (a frame is a clip with ``T = 1``); outputs are normalised
float ``(T, C, H, W)``. One view draws one set of random parameters from the ``torch.Generator``
it is given and applies it to every frame of the clip; separate views draw independently.
``per_frame_jitter=True`` draws the colour jitter per frame instead (MLFO's code does this).
Given the same generator state the output is identical: augmentation is deterministic under a seed.

:meth:`ClipAugment.draw` makes a view's random draws and :meth:`ClipAugment.apply` applies the
draws of many views at once (the loader passes a whole batch): at 32 px each operation costs its
call, not its pixels, so one call over a batch's frames replaces one call per view. A view's result
does not depend on the views it is batched with (tested).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
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


@functools.lru_cache(maxsize=16)
def _channel_constants(values: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)


def normalize(clip_uint8: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (clip_uint8.float().div_(255.0) - _channel_constants(tuple(mean))) / _channel_constants(tuple(std))


# The loader's operations at 32 px cost their number, not their size: the colour operations below
# are torchvision's uint8 arithmetic (the same float32 operations, so the same results) without its
# dispatch layers, and the hue shift a closed form. A factor is a float for every image or a
# float64 tensor of one factor per image, ``(N, 1, 1, 1)`` against images ``(N, 3, H, W)``, so that
# one call serves a batch of views. Tests compare each with torchvision.

Factor = float | torch.Tensor


def _float32(factor: Factor) -> Factor:
    """A factor as ATen uses a scalar operand of a float32 operation: rounded to float32."""
    return factor.float() if isinstance(factor, torch.Tensor) else factor


def _fused_multiply_add(x: torch.Tensor, y: torch.Tensor, alpha: Factor) -> torch.Tensor:
    """``x + alpha * y`` of float32 tensors rounded once, as ATen's ``x.add_(y, alpha=alpha)`` (a
    fused multiply-add) rounds it with ``alpha`` in float32, here for a per-image ``alpha`` too. The
    product of two float32 is exact in float64, so the float64 sum is exact unless it needs more
    than 53 bits; rounded to float32 it then differs from one rounding only by falling exactly on a
    float32 midpoint, which neither the tests (against ``add_``) nor the loader's values met."""
    if not isinstance(alpha, torch.Tensor):
        return x.add_(y, alpha=alpha)
    return x.double().addcmul_(y.double(), alpha.float().double()).float()


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


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: Factor) -> torch.Tensor:
    """torchvision's uint8 blend ``ratio * image + (1 - ratio) * other``, clamped and truncated."""
    return _fused_multiply_add(image.mul(_float32(ratio)), other, 1.0 - ratio).clamp_(0, 255).to(torch.uint8)


def adjust_brightness(image: torch.Tensor, factor: Factor) -> torch.Tensor:
    """torchvision's ``adjust_brightness`` of uint8 RGB images."""
    return image.mul(_float32(factor)).clamp_(0, 255).to(torch.uint8)


def adjust_contrast(image: torch.Tensor, factor: Factor) -> torch.Tensor:
    """torchvision's ``adjust_contrast`` of uint8 RGB images: a blend with each image's mean grey."""
    return _blend(image, _grey_level(image).mean((-3, -2, -1), keepdim=True), factor)


def adjust_saturation(image: torch.Tensor, factor: Factor) -> torch.Tensor:
    """torchvision's ``adjust_saturation`` of uint8 RGB images: a blend with the grey image."""
    return _blend(image, _grey_level(image), factor)


_CHANNEL_PHASES = (5.0, 3.0, 1.0)  # n of the HSV -> RGB closed form for R, G, B


def adjust_hue(image: torch.Tensor, factor: Factor) -> torch.Tensor:
    """torchvision's ``adjust_hue`` of RGB images ``(..., 3, H, W)`` (uint8, or float in ``[0, 1]``;
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
    k = torch.remainder(_channel_constants(_CHANNEL_PHASES) + (h6.unsqueeze(-3) + _float32(6 * factor)), 6)
    out = v.unsqueeze(-3) - c.unsqueeze(-3) * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return out if image.is_floating_point() else out.mul_(256 - 1e-3).to(image.dtype)


def _gaussian_weights(kernel: int, sigma: float) -> list[float]:
    """torchvision's kernel: ``exp(-d^2 / 2 sigma^2)`` at offsets ``d = -(k-1)/2 .. (k-1)/2``, normalised."""
    r = (kernel - 1) / 2
    weights = [math.exp(-0.5 * ((i - r) / sigma) ** 2) for i in range(kernel)]
    total = sum(weights)
    return [w / total for w in weights]


def gaussian_blur(image: torch.Tensor, kernel: int, sigma: float | Sequence[float]) -> torch.Tensor:
    """Gaussian blur of images ``(N, C, H, W)`` with one ``sigma``, or one per image (uint8 results
    rounded, as torchvision's): torchvision's kernel and reflect padding, applied separably as
    weighted sums of shifted slices (a depthwise convolution costs ~1 ms per 32 px frame on CPU)."""
    x = image if image.is_floating_point() else image.float()
    pad, (h, w) = kernel // 2, x.shape[-2:]
    if pad >= min(h, w):
        raise ValueError(f"blur kernel {kernel} is too large for a {h}x{w} image")
    if not isinstance(sigma, (int, float)) and all(v == sigma[0] for v in sigma):
        sigma = sigma[0]
    if isinstance(sigma, (int, float)):
        taps: list[Factor] = list(_gaussian_weights(kernel, sigma))
    else:
        per_image = torch.tensor([_gaussian_weights(kernel, s) for s in sigma], dtype=torch.float64)
        taps = list(per_image.T.reshape(kernel, -1, 1, 1, 1))
    for dim, padding in ((-1, [pad, pad, 0, 0]), (-2, [0, 0, pad, pad])):  # along the width, then the height
        y = NF.pad(x, padding, mode="reflect")
        x = y.narrow(dim, 0, image.shape[dim]) * _float32(taps[0])
        for i in range(1, kernel):
            x = _fused_multiply_add(x, y.narrow(dim, i, image.shape[dim]), taps[i])
    return x if image.is_floating_point() else x.round_().to(image.dtype)


_JITTER_OPERATIONS = (("brightness", adjust_brightness), ("contrast", adjust_contrast),
                      ("saturation", adjust_saturation), ("hue", adjust_hue))


def _select(images: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    return images if len(chosen) == len(images) else images[torch.tensor(chosen)]


def _replace(images: torch.Tensor, chosen: list[int], values: torch.Tensor) -> torch.Tensor:
    """``images`` with those at ``chosen`` replaced by ``values`` (in place unless all are)."""
    if len(chosen) == len(images):
        return values
    images[torch.tensor(chosen)] = values
    return images


def _factor(draws: Sequence[object], name: str) -> Factor:
    """The ``name`` factor of images drawn by ``draws``: a float if one draw made them all (a view's
    frames), else a float64 tensor ``(N, 1, 1, 1)``."""
    if all(d is draws[0] for d in draws):
        return getattr(draws[0], name)
    return torch.tensor([getattr(d, name) for d in draws], dtype=torch.float64).view(-1, 1, 1, 1)


def jitter_images(images: torch.Tensor, draws: Sequence[ColorJitterParams | None]) -> torch.Tensor:
    """ColorJitter of uint8 images ``(N, 3, H, W)``: image ``i`` with ``draws[i]`` (``None``: left
    alone), its four operations in its own drawn order. At each of the four positions the images
    are grouped by the operation they take there: one call per group, whatever the batch size."""
    for position in range(4):
        groups: dict[int, list[int]] = {}
        for i, d in enumerate(draws):
            if d is not None:
                groups.setdefault(d.order[position], []).append(i)
        for op, chosen in groups.items():
            name, fn = _JITTER_OPERATIONS[op]
            factor = _factor([draws[i] for i in chosen], name)
            images = _replace(images, chosen, fn(_select(images, chosen), factor))
    return images


@dataclass(frozen=True)
class ViewDraw:
    """One view's random parameters, drawn by :meth:`ClipAugment.draw` in the recipe's order."""

    box: tuple[int, int, int, int]  # the resized crop: top, left, height, width
    jitter: tuple[ColorJitterParams | None, ...]  # per frame: one draw repeated unless per_frame_jitter
    gray: bool
    blur_sigma: float | None
    flip: bool


# Views of at most this many values are augmented together (up to _CHUNK_VALUES at a time), larger
# ones alone. Measured on 2 cores (benchmarks.md): together is 1.4-1.75x faster per sample for 32 px
# frames and 1.2-1.4x for 48 px ones, no faster for 64 px frames or 32 px clips of 4-8 frames, whose
# operations are no longer dominated by their call (and per-view factors cost float64 work).
_SMALL_VIEW = 8192
_CHUNK_VALUES = 1 << 22


def _chunks(sizes: Sequence[int], small: int, limit: int) -> list[list[int]]:
    """Consecutive indices in groups: views of at most ``small`` values together, up to ``limit``
    values a group; a larger view alone."""
    groups: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if groups and size <= small and sizes[groups[-1][-1]] <= small and total + size <= limit:
            groups[-1].append(i)
            total += size
        else:
            groups.append([i])
            total = size
    return groups


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
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def blur_kernel(self) -> int:
        k = max(int(0.1 * self.size), 3)  # 10% of the crop, as MoCo-v2 (23 px at 224)
        return k if k % 2 == 1 else k + 1

    def __call__(self, clip: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return self.apply([clip], [self.draw(clip, g)])[0]

    def draw(self, clip: torch.Tensor, g: torch.Generator) -> ViewDraw:
        """The random parameters of one view of ``clip`` (``(T, 3, H, W)`` uint8), from ``g``."""
        if clip.ndim != 4 or clip.shape[1] != 3 or clip.dtype != torch.uint8:
            raise ValueError(f"expected a (T, 3, H, W) uint8 clip, got {tuple(clip.shape)} {clip.dtype}")
        box = resized_crop_params(clip.shape[-2], clip.shape[-1], self.scale, self.ratio, g)
        if self.per_frame_jitter:
            jitter = tuple(self._draw_jitter(g) for _ in range(clip.shape[0]))
        else:
            jitter = (self._draw_jitter(g),) * clip.shape[0]
        gray = _coin(g, self.p_gray)
        sigma = _uniform(g, *self.blur_sigma) if _coin(g, self.p_blur) else None
        return ViewDraw(box, jitter, gray, sigma, flip=_coin(g, self.p_flip))

    def _draw_jitter(self, g: torch.Generator) -> ColorJitterParams | None:
        return ColorJitterParams.draw(self.jitter, g) if _coin(g, self.p_jitter) else None

    def apply(self, clips: Sequence[torch.Tensor], draws: Sequence[ViewDraw]) -> list[torch.Tensor]:
        """``clips[i]`` augmented with ``draws[i]``, as normalised float ``(T, C, size, size)``. The
        frames of small views (at most 8,192 values: frames up to 52 px) go through each operation
        together, larger views one at a time."""
        out: list[torch.Tensor] = []
        for chunk in _chunks([clip.shape[0] * 3 * self.size ** 2 for clip in clips], _SMALL_VIEW, _CHUNK_VALUES):
            frames = [clips[i].shape[0] for i in chunk]
            x = torch.cat([resized_crop(clips[i], *draws[i].box, self.size) for i in chunk])
            x = jitter_images(x, [j for i in chunk for j in draws[i].jitter])
            x = self._after_jitter(x, [draws[i] for i, t in zip(chunk, frames, strict=True) for _ in range(t)])
            out.extend(normalize(x, self.mean, self.std).split(frames))
        return out

    def _after_jitter(self, images: torch.Tensor, views: list[ViewDraw]) -> torch.Tensor:
        """Grayscale, blur and flip of uint8 images ``(N, 3, H, W)``, image ``i`` from view ``views[i]``."""
        if gray := [i for i, v in enumerate(views) if v.gray]:
            images = _replace(images, gray, F.rgb_to_grayscale(_select(images, gray), num_output_channels=3))
        if blurred := [i for i, v in enumerate(views) if v.blur_sigma is not None]:
            sigmas = [views[i].blur_sigma for i in blurred]
            images = _replace(images, blurred, gaussian_blur(_select(images, blurred), self.blur_kernel, sigmas))
        if flipped := [i for i, v in enumerate(views) if v.flip]:
            images = _replace(images, flipped, F.horizontal_flip(_select(images, flipped)))
        return images


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
