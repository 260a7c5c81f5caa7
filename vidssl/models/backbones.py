"""Backbones with one interface: ``forward(x) -> (B, feature_dim)`` pooled features,
``forward_levels(x) -> {"low", "mid", "high"}`` feature maps (MLFO's taps), ``kind`` (``"2d"``
takes ``(B, C, H, W)``, ``"3d"`` takes ``(B, C, T, H, W)``).

torchvision architectures are built without weights (no downloads) and keep torchvision's
parameter names, with the classifier replaced by ``Identity``: an exported state dict loads with
``strict=True`` into the torchvision model after ``model.fc = nn.Identity()`` (``classifier`` for
S3D). ``tiny2d`` / ``tiny3d`` are small ResNet-shaped CPU variants (widths 16-128, one block per
stage) for tests and laptop runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import nn

LEVELS = ("low", "mid", "high")


class BasicBlock(nn.Module):
    """A two-convolution residual block, 2D or 3D."""

    def __init__(self, conv: type[nn.Module], norm: type[nn.Module], cin: int, cout: int,
                 stride: int | tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(cout)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.bn2 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(conv(cin, cout, 1, stride=stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    """A small ResNet (one basic block per stage), 2D or 3D, named like torchvision's."""

    def __init__(self, kind: str, widths: tuple[int, int, int, int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        conv, norm = (nn.Conv2d, nn.BatchNorm2d) if kind == "2d" else (nn.Conv3d, nn.BatchNorm3d)
        s2 = 2 if kind == "2d" else (1, 2, 2)
        s3 = 2 if kind == "2d" else (2, 2, 2)
        self.conv1 = conv(3, widths[0], 3, stride=s2, padding=1, bias=False)
        self.bn1 = norm(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(conv, norm, widths[0], widths[0], 1)
        self.layer2 = BasicBlock(conv, norm, widths[0], widths[1], s2)
        self.layer3 = BasicBlock(conv, norm, widths[1], widths[2], s3)
        self.layer4 = BasicBlock(conv, norm, widths[2], widths[3], s3)
        self.avgpool = nn.AdaptiveAvgPool2d(1) if kind == "2d" else nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Identity()


class HaraStem(nn.Sequential):
    """The stem of Hara et al.'s 3D ResNets (3D-ResNets-PyTorch), which MLFO's official code
    trains: a 7x7x7 convolution with stride (1, 2, 2) and a (1, 3, 3) max pool, where torchvision's
    ``r3d_18`` has a 3x7x7 convolution and no pool."""

    def __init__(self) -> None:
        super().__init__(nn.Conv3d(3, 64, (7, 7, 7), (1, 2, 2), (3, 3, 3), bias=False), nn.BatchNorm3d(64),
                         nn.ReLU(inplace=True), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))


def _r3d_18_hara() -> nn.Module:
    """R3D-18 with :class:`HaraStem`: torchvision's ``VideoResNet`` and its names otherwise."""
    from torchvision.models.video.resnet import BasicBlock as VideoBlock
    from torchvision.models.video.resnet import Conv3DSimple, VideoResNet

    return VideoResNet(VideoBlock, [Conv3DSimple] * 4, [2, 2, 2, 2], HaraStem)


def _resnet_stem(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if hasattr(m, "stem"):  # torchvision video ResNets
        return m.stem
    if hasattr(m, "maxpool"):
        return lambda x: m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return lambda x: m.relu(m.bn1(m.conv1(x)))


# name -> (constructor, kind, feature_dim)
ARCHS: dict[str, tuple[Callable[[], nn.Module], str, int]] = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), "2d", 512),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), "2d", 2048),
    "r3d_18": (lambda: torchvision.models.video.r3d_18(weights=None), "3d", 512),
    "r2plus1d_18": (lambda: torchvision.models.video.r2plus1d_18(weights=None), "3d", 512),
    "mc3_18": (lambda: torchvision.models.video.mc3_18(weights=None), "3d", 512),
    "r3d_18_hara": (_r3d_18_hara, "3d", 512),
    "s3d": (lambda: torchvision.models.video.s3d(weights=None), "3d", 1024),
    "tiny2d": (lambda: TinyResNet("2d"), "2d", 128),
    "tiny3d": (lambda: TinyResNet("3d"), "3d", 128),
}
# Channels of the low / mid / high feature maps.
LEVEL_CHANNELS: dict[str, tuple[int, int, int]] = {
    "resnet18": (128, 256, 512), "resnet50": (512, 1024, 2048), "r3d_18": (128, 256, 512),
    "r2plus1d_18": (128, 256, 512), "mc3_18": (128, 256, 512), "r3d_18_hara": (128, 256, 512), "s3d": (480, 832, 1024),
    "tiny2d": (32, 64, 128), "tiny3d": (32, 64, 128),
}
# S3D: feature indices after which the low / mid / high taps are taken (Mixed_3c, Mixed_4f, Mixed_5c).
_S3D_TAPS = {"low": 6, "mid": 12, "high": 15}


def require_3d(backbone: Backbone, method: str) -> None:
    """Clip methods refuse a frame backbone with the method named."""
    if backbone.kind != "3d":
        raise ValueError(f"{method} works on clips: needs a 3d backbone, got {backbone.arch}")


class Backbone(nn.Module):
    """An encoder: ``self.net`` is the torchvision-named model with its classifier removed."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
        build, self.kind, self.feature_dim = ARCHS[arch]
        self.arch = arch
        self.level_channels = dict(zip(LEVELS, LEVEL_CHANNELS[arch], strict=True))
        self.net = build()
        if arch == "s3d":
            self.net.classifier = nn.Identity()
        else:
            self.net.fc = nn.Identity()

    @property
    def is_torchvision(self) -> bool:
        return not self.arch.startswith("tiny")

    def forward_levels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps of the low / mid / high levels (ResNets: layer2 / layer3 / layer4)."""
        self._check_input(x)
        if self.arch == "s3d":
            out, taps = {}, {v: k for k, v in _S3D_TAPS.items()}
            for i, layer in enumerate(self.net.features):
                x = layer(x)
                if i in taps:
                    out[taps[i]] = x
            return out
        x = self.net.layer1(_resnet_stem(self.net)(x))
        low = self.net.layer2(x)
        mid = self.net.layer3(low)
        return {"low": low, "mid": mid, "high": self.net.layer4(mid)}

    def pool(self, high: torch.Tensor) -> torch.Tensor:
        """Global average pooling of the high-level map to ``(B, feature_dim)``."""
        return high.flatten(2).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_levels(x)["high"])

    def _check_input(self, x: torch.Tensor) -> None:
        want = 4 if self.kind == "2d" else 5
        if x.ndim != want or x.shape[1] != 3:
            layout = "(B, 3, H, W)" if self.kind == "2d" else "(B, 3, T, H, W)"
            raise ValueError(f"{self.arch} takes {layout} input, got {tuple(x.shape)}")


def set_output_stride(backbone: Backbone, stride: int = 8) -> Backbone:
    """Make a 2D ResNet's ``layer4`` map ``1/stride`` of the input, in place, weights unchanged: each
    stage that would go past ``stride`` gets stride 1 and its 3x3 convolutions a dilation of the
    stride it gave up times the previous stage's (SeCo Sec. 4, ResNet-50 at 8: res4 and res5
    dilated 2 and 4; tiny2d at 8: layer4 dilated 2)."""
    net = backbone.net
    if backbone.kind != "2d" or not hasattr(net, "layer4"):
        raise ValueError(f"{backbone.arch}: output stride applies to 2D ResNets")
    reached = net.conv1.stride[0] * (2 if hasattr(net, "maxpool") else 1)
    dilation = 1
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(net, name)
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
        step = max(c.stride[0] for c in convs)
        if reached * step <= stride:
            reached *= step
            continue
        dilation *= step
        for conv in convs:
            conv.stride = (1, 1)
            if conv.kernel_size[0] == 3:
                conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
    return backbone
