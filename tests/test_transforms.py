from __future__ import annotations

import torch
import torchvision.transforms.v2.functional as TF

from vidssl.data.transforms import (
    ClipAugment,
    ColorJitterParams,
    EvalTransform,
    _chunks,
    _fused_multiply_add,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    jitter_images,
    resized_crop,
    resized_crop_params,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_parameters_for_every_frame_of_a_clip(frames):
    # A clip of one frame repeated: any per-frame difference in the output would mean the random
    # parameters differ between frames.
    clip = frames[5:6].repeat(8, 1, 1, 1)
    for seed in range(10):
        out = ClipAugment(size=24)(clip, gen(seed))
        assert out.shape == (8, 3, 24, 24)
        assert torch.allclose(out, out[:1].expand_as(out))


def test_views_are_independent(frames):
    aug = ClipAugment(size=24)
    g = gen(0)
    a, b = aug(frames[:4], g), aug(frames[:4], g)
    assert not torch.allclose(a, b)


def test_deterministic_under_a_seed(frames):
    aug = ClipAugment(size=24)
    assert torch.equal(aug(frames[:4], gen(7)), aug(frames[:4], gen(7)))


def test_per_frame_jitter_changes_frames_differently(frames):
    clip = frames[5:6].repeat(6, 1, 1, 1)
    aug = ClipAugment(size=24, per_frame_jitter=True, p_jitter=1.0, p_gray=0.0, p_blur=0.0)
    out = aug(clip, gen(1))
    assert not torch.allclose(out[0], out[1])


def test_normalisation_statistics(frames):
    t = EvalTransform(resize=32, crop=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    assert torch.allclose(t(x), torch.ones(1, 3, 32, 32))


def test_eval_transform_resizes_short_side_and_centre_crops():
    x = torch.zeros((2, 3, 40, 80), dtype=torch.uint8)
    x[..., 30:50] = 255  # a bright band in the horizontal centre
    out = EvalTransform(resize=20, crop=20, mean=(0, 0, 0), std=(1, 1, 1))(x)
    assert out.shape == (2, 3, 20, 20)
    assert out[..., 5:15].mean() > 0.9 and out[..., :3].mean() < 0.1


def test_resized_crop_params_in_bounds():
    g = gen(0)
    for _ in range(200):
        top, left, h, w = resized_crop_params(30, 50, (0.2, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 50
        assert 0.2 * 1500 * 0.9 <= h * w <= 1500


def test_gaussian_blur_matches_torchvision():
    x = torch.rand(2, 3, 40, 48, generator=gen(0))
    x8 = (x * 255).to(torch.uint8)
    for kernel, sigma in ((3, 0.1), (3, 1.3), (23, 2.0)):
        expected = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
        assert torch.allclose(gaussian_blur(x, kernel, sigma), expected, atol=1e-6)
        expected8 = TF.gaussian_blur(x8, [kernel, kernel], [sigma, sigma])
        ours8 = gaussian_blur(x8, kernel, sigma)
        assert ours8.dtype == torch.uint8 and (ours8.int() - expected8.int()).abs().max() <= 1  # ties may round apart
        assert (ours8 != expected8).float().mean() < 0.01


def test_augment_of_a_grey_clip_with_colour_jitter_and_blur_stays_grey():
    clip = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    aug = ClipAugment(size=16, p_jitter=1.0, p_blur=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for seed in range(5):
        out = aug(clip, gen(seed))
        assert out.min() >= 0.0 and out.max() <= 1.0 and torch.equal(out, out[:, :1].expand_as(out))


def test_adjust_hue_matches_torchvision():
    x = torch.rand(2, 3, 17, 19, generator=gen(1))
    x[0, :, :4] = x[0, :1, :4]  # grey pixels (no chroma) and ties between channels
    x[1, 1, :3] = x[1, 0, :3]
    x8 = (x * 255).to(torch.uint8)
    for factor in (-0.5, -0.1, 0.0, 0.03, 0.25, 0.5):
        assert torch.allclose(adjust_hue(x, factor), TF.adjust_hue(x, factor), atol=1e-5)
        ours8, expected8 = adjust_hue(x8, factor), TF.adjust_hue(x8, factor)
        assert ours8.dtype == torch.uint8 and (ours8.int() - expected8.int()).abs().max() <= 1
        assert (ours8 != expected8).float().mean() < 0.01


def test_colour_operations_and_crop_equal_torchvision_exactly():
    """The loader's own uint8 brightness, contrast, saturation and resized crop are torchvision's
    arithmetic without its dispatch: the same bytes."""
    g = gen(4)
    for _ in range(20):
        x = (torch.rand(3, 3, 21, 26, generator=g) * 255).to(torch.uint8)
        x[0, :, :5] = x[0, :1, :5]  # grey pixels
        factor = float(torch.rand((), generator=g)) * 1.6
        assert torch.equal(adjust_brightness(x, factor), TF.adjust_brightness(x, factor))
        assert torch.equal(adjust_contrast(x, factor), TF.adjust_contrast(x, factor))
        assert torch.equal(adjust_saturation(x, factor), TF.adjust_saturation(x, factor))
        top, left, h, w = resized_crop_params(21, 26, (0.2, 1.0), (3 / 4, 4 / 3), g)
        for size in (16, 32, h):
            expected = TF.resized_crop(x, top, left, h, w, [size, size], antialias=True)
            assert torch.equal(resized_crop(x, top, left, h, w, size), expected)


def test_fused_multiply_add_with_per_image_alpha_is_aten_add_per_image():
    """The float64 form for a per-image alpha rounds as ``add_`` (a fused multiply-add), tail
    elements of a 26-wide row included."""
    g = gen(5)
    x, y = torch.rand(64, 3, 5, 26, generator=g) * 255, torch.rand(64, 3, 5, 26, generator=g) * 255
    y[:8] = y[:8].floor()
    alpha = torch.rand(64, 1, 1, 1, generator=g, dtype=torch.float64) * 2 - 0.5
    ours = _fused_multiply_add(x.clone(), y, alpha)
    expected = torch.stack([x[i].clone().add_(y[i], alpha=float(alpha[i])) for i in range(64)])
    assert torch.equal(ours, expected)
    assert not torch.equal(ours, x + y * alpha.float())  # the unfused form rounds differently


def test_per_image_factors_equal_one_call_per_image():
    g = gen(6)
    x = (torch.rand(12, 3, 13, 26, generator=g) * 255).to(torch.uint8)
    x[0] = x[0, :1]  # a grey image
    factors = torch.rand(12, 1, 1, 1, generator=g, dtype=torch.float64) * 1.2 + 0.4
    for fn, scale in ((adjust_brightness, 1.0), (adjust_contrast, 1.0), (adjust_saturation, 1.0), (adjust_hue, 0.2)):
        ours = fn(x, (factors - 1) * scale if fn is adjust_hue else factors)
        expected = torch.cat([fn(x[i:i + 1], (float(f) - 1) * scale if fn is adjust_hue else float(f))
                              for i, f in enumerate(factors.flatten())])
        assert torch.equal(ours, expected), fn.__name__
    sigmas = [0.1 + 0.15 * i for i in range(12)]
    expected = torch.cat([gaussian_blur(x[i:i + 1], 5, s) for i, s in enumerate(sigmas)])
    assert torch.equal(gaussian_blur(x, 5, sigmas), expected)


def test_jitter_images_applies_each_images_own_draw_in_its_own_order():
    g = gen(7)
    x = (torch.rand(6, 3, 9, 9, generator=g) * 255).to(torch.uint8)
    draws = [ColorJitterParams.draw((0.4, 0.4, 0.4, 0.1), g) for _ in range(5)] + [None]
    draws[1] = ColorJitterParams(1.3, 0.7, 1.2, 0.05, (3, 2, 1, 0))
    draws[2] = ColorJitterParams(1.3, 0.7, 1.2, 0.05, (0, 1, 2, 3))  # same factors, another order
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for i, d in enumerate(draws):
        expected = x[i:i + 1]
        for op in d.order if d else ():
            expected = ops[op](expected, (d.brightness, d.contrast, d.saturation, d.hue)[op])
        assert torch.equal(jitter_images(x.clone(), draws)[i:i + 1], expected), i
    assert not torch.equal(jitter_images(x.clone(), draws)[1], jitter_images(x.clone(), draws)[2])


def test_chunks_group_small_views_and_leave_large_ones_alone():
    assert _chunks([3, 3, 9, 3, 3, 3, 3], small=4, limit=7) == [[0, 1], [2], [3, 4], [5, 6]]
    assert _chunks([], small=4, limit=7) == []


def test_many_views_at_once_equal_one_view_at_a_time():
    """``apply`` over a batch gives every view what augmenting it alone gives: small and large
    views, clip-wise and per-frame jitter, grayscale and blur on some views only."""
    g = gen(8)
    for size, per_frame in ((16, False), (24, True), (48, False), (64, False)):
        aug = ClipAugment(size=size, p_jitter=0.8, p_gray=0.3, p_blur=0.6, per_frame_jitter=per_frame)
        clips = [(torch.rand(1 + i % 3, 3, size + 5 * (i % 2), size + 7, generator=g) * 255).to(torch.uint8)
                 for i in range(24)]
        g1, g2 = gen(size), gen(size)
        alone = [aug(clip, g1) for clip in clips]
        draws = [aug.draw(clip, g2) for clip in clips]
        assert {d.gray for d in draws} == {d.blur_sigma is None for d in draws} == {True, False}
        together = aug.apply(clips, draws)
        assert len(together) == len(clips)
        for a, b in zip(alone, together, strict=True):
            assert torch.equal(a, b)
