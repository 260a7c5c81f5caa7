from __future__ import annotations

import torch

from vidssl.data.transforms import ClipAugment, ColorJitterParams, color_jitter, normalize, resized_crop_params


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


def test_per_frame_gray_greys_some_frames_and_leaves_the_others(frames):
    clip = frames[5:6].repeat(8, 1, 1, 1)
    kw = dict(size=24, p_jitter=0.0, p_gray=0.5, p_blur=0.0, p_flip=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    aug = ClipAugment(**kw, per_frame_gray=True)
    draw = aug.draw(clip, gen(3))
    assert len(set(draw.gray)) == 2  # some frames grey, some not, from one draw
    out = aug.apply(clip, draw)
    for frame, gray in zip(out, draw.gray, strict=True):
        channels_equal = torch.allclose(frame[0] * 0.229 + 0.485, frame[1] * 0.224 + 0.456, atol=1e-4)
        assert channels_equal == gray
    whole = ClipAugment(**kw).draw(clip, gen(3))
    assert len(set(whole.gray)) == 1  # the default: one draw for the clip


def test_normalisation_statistics():
    x = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(x, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), torch.ones(1, 3, 4, 4))
    assert torch.allclose(normalize(x * 0, (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)), torch.tensor([-1.0, -0.5, 0.0])
                          .view(1, 3, 1, 1).expand(1, 3, 4, 4))


def test_flip_mirrors_every_frame_and_nothing_else():
    clip = (torch.rand(3, 3, 16, 16, generator=gen(2)) * 255).to(torch.uint8)
    identity = dict(size=16, scale=(1.0, 1.0), ratio=(1.0, 1.0), p_jitter=0.0, p_gray=0.0, p_blur=0.0,
                    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    assert torch.equal(ClipAugment(**identity, p_flip=0.0)(clip, gen(0)), clip.float() / 255)
    assert torch.equal(ClipAugment(**identity, p_flip=1.0)(clip, gen(0)), clip.flip(-1).float() / 255)


def test_colour_jitter_runs_its_operations_in_the_drawn_order():
    """Brightness 2 then contrast 2 clips a bright pixel at 255 before the contrast sees it;
    contrast first does not: the drawn order must be the order applied."""
    image = torch.tensor([100, 140], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    brightness_only = ColorJitterParams(brightness=1.5, contrast=1.0, saturation=1.0, hue=0.0, order=(3, 2, 1, 0))
    assert color_jitter(image, brightness_only)[0, :, 0].tolist() == [[150, 210]] * 3  # the others are identities
    kw = dict(brightness=2.0, contrast=2.0, saturation=1.0, hue=0.0)
    brightness_first = color_jitter(image, ColorJitterParams(**kw, order=(0, 1, 2, 3)))[0, 0, 0]
    contrast_first = color_jitter(image, ColorJitterParams(**kw, order=(1, 0, 2, 3)))[0, 0, 0]
    # by hand (up to torchvision's rounding): (200, 255) clipped, grey mean ~227.5, contrast 2 -> (~172, 255);
    # the other order (80, 160), then (160, 255)
    assert abs(int(brightness_first[0]) - 172) <= 2 and int(brightness_first[1]) == 255
    assert abs(int(contrast_first[0]) - 160) <= 2 and int(contrast_first[1]) == 255


def test_resized_crop_params_in_bounds():
    g = gen(0)
    for _ in range(200):
        top, left, h, w = resized_crop_params(30, 50, (0.2, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 30 and 0 <= left and left + w <= 50
        assert 0.2 * 1500 * 0.9 <= h * w <= 1500


def test_augment_of_a_grey_clip_with_colour_jitter_and_blur_stays_grey():
    clip = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    aug = ClipAugment(size=16, p_jitter=1.0, p_blur=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    for seed in range(5):
        out = aug(clip, gen(seed))
        assert out.min() >= 0.0 and out.max() <= 1.0 and torch.equal(out, out[:, :1].expand_as(out))


def test_shared_crop_gives_a_samples_views_one_box_and_flip(frames):
    """Views of one frame under a shared crop (no colour operations) are identical; drawn
    independently, their boxes differ."""
    one = frames[:1]
    kw = dict(size=16, scale=(0.2, 1.0), p_jitter=0.0, p_gray=0.0, p_blur=0.0, p_flip=0.5)
    for seed in range(5):
        shared = ClipAugment(**kw, shared_crop=True).views([one] * 4, torch.Generator().manual_seed(seed))
        assert all(torch.equal(v, shared[0]) for v in shared)
    own = ClipAugment(**kw).views([one] * 4, torch.Generator().manual_seed(0))
    assert not all(torch.equal(v, own[0]) for v in own)


def test_flip_is_off_by_default_where_labels_name_a_direction():
    from vidssl.data.transforms import flip_default
    from vidssl.engine.config import load_config
    from vidssl.engine.train import build_dataset

    assert flip_default("ssv2") == 0.0 and flip_default("synthetic") == 0.0 and flip_default("ucf101") == 0.5
    cfg = load_config("seco_laptop", ["data.synthetic_videos=20"])
    assert build_dataset(cfg).transform.p_flip == 0.0  # the built-in motion classes
    cfg = load_config("seco_laptop", ["data.synthetic_videos=20", "augment.p_flip=0.5", "augment.shared_crop=true"])
    aug = build_dataset(cfg).transform
    assert aug.p_flip == 0.5 and aug.shared_crop
