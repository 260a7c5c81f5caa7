"""BMN, the Boundary-Matching Network (Lin et al., ICCV 2019), on pre-extracted feature sequences:
VCLR's temporal action localisation protocol (VCLR Sec. 4.5).

Input: a video's features ``(C, T)`` resampled to ``T`` rows (ActivityNet: 100). The base module
(two grouped 1D convolutions) feeds the temporal evaluation module (start and end probability per
position) and the proposal evaluation module: a 1D convolution, the *boundary-matching layer*
(``num_sample`` points sampled by linear interpolation across every proposal, widened by
``boundary_ratio`` of its length on each side, ``num_sample_perbin`` points per sample averaged), a
3D convolution that consumes the sample axis, and 2D convolutions to the ``(2, D, T)`` confidence
map: regression and classification confidence of the proposal starting at ``t`` and lasting
``d + 1`` positions. Losses (``bmn_loss``): TEM's weighted binary logistic loss on start and end,
PEM's regression (L2 on the IoU, high / medium / low IoU entries balanced by random sampling) and
classification (weighted binary logistic, positive above IoU 0.9); total ``tem + 10 reg + cls``.
Inference (``proposals``): starts and ends that are local peaks or above half the maximum, pairs
scored ``start x end x reg x cls``, then Soft-NMS (``vidssl.eval.localize``).
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6


def boundary_matching_mask(tscale: int, dscale: int, num_sample: int, per_bin: int, ratio: float) -> torch.Tensor:
    """``(T, N * D * T)`` weights: column ``(n, d, t)`` interpolates sample ``n`` of the proposal
    from ``t`` to ``t + d`` (widened by ``ratio`` of its length on each side) from the ``T`` positions;
    zero for proposals that end past the sequence. Interpolation as BMN's code: the sample's integer
    part (truncated towards zero) gets ``1 - frac``, its ceiling gets ``frac``."""
    d = torch.arange(dscale, dtype=torch.float64).view(-1, 1, 1)
    t = torch.arange(tscale, dtype=torch.float64).view(1, -1, 1)
    length = d + 1
    xmin, xmax = t - ratio * length, t + d + ratio * length
    k = torch.arange(num_sample * per_bin, dtype=torch.float64).view(1, 1, -1)
    pos = xmin + (xmax - xmin) * k / (num_sample * per_bin - 1)  # (D, T, N * P)
    down, up = torch.trunc(pos), torch.ceil(pos)
    frac = pos - down
    mask = torch.zeros(tscale, num_sample, dscale, tscale)
    sample = (torch.arange(num_sample * per_bin) // per_bin).view(1, 1, -1).expand_as(pos)
    dd = torch.arange(dscale).view(-1, 1, 1).expand_as(pos)
    tt = torch.arange(tscale).view(1, -1, 1).expand_as(pos)
    for index, weight in ((down, 1 - frac), (up, frac)):
        inside = (index >= 0) & (index < tscale)
        mask.index_put_((index[inside].long(), sample[inside], dd[inside], tt[inside]),
                        (weight[inside] / per_bin).float(), accumulate=True)
    return (mask * valid_proposals(tscale, dscale)).reshape(tscale, -1)


def valid_proposals(tscale: int, dscale: int) -> torch.Tensor:
    """``(D, T)``: 1 where the proposal from ``t`` lasting ``d + 1`` ends inside the sequence."""
    return ((torch.arange(dscale).view(-1, 1) + torch.arange(tscale).view(1, -1)) < tscale).float()


class BMN(nn.Module):
    def __init__(self, feat_dim: int, tscale: int = 100, dscale: int = 100, num_sample: int = 32,
                 per_bin: int = 3, boundary_ratio: float = 0.5, hidden: int = 256) -> None:
        super().__init__()
        self.tscale, self.dscale, self.num_sample = tscale, dscale, num_sample

        def tem() -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(hidden, hidden, 3, padding=1, groups=4), nn.ReLU(inplace=True),
                                 nn.Conv1d(hidden, 1, 1), nn.Sigmoid())
        self.base = nn.Sequential(nn.Conv1d(feat_dim, hidden, 3, padding=1, groups=4), nn.ReLU(inplace=True),
                                  nn.Conv1d(hidden, hidden, 3, padding=1, groups=4), nn.ReLU(inplace=True))
        self.start, self.end = tem(), tem()
        self.pem_1d = nn.Sequential(nn.Conv1d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.pem_3d = nn.Sequential(nn.Conv3d(hidden, 512, (num_sample, 1, 1), stride=(num_sample, 1, 1)),
                                    nn.ReLU(inplace=True))
        self.pem_2d = nn.Sequential(nn.Conv2d(512, 128, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(128, 2, 1), nn.Sigmoid())
        self.register_buffer("sample_mask", boundary_matching_mask(tscale, dscale, num_sample, per_bin,
                                                                   boundary_ratio), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features ``(B, C, T)`` -> confidence map ``(B, 2, D, T)``, start ``(B, T)``, end ``(B, T)``."""
        base = self.base(x)
        start, end = self.start(base).squeeze(1), self.end(base).squeeze(1)
        pem = self.pem_1d(base)
        b, c, _ = pem.shape
        sampled = (pem @ self.sample_mask).view(b, c, self.num_sample, self.dscale, self.tscale)
        return self.pem_2d(self.pem_3d(sampled).squeeze(2)), start, end


def _overlap(a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    return (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp_min(0)


def training_targets(segments: torch.Tensor, tscale: int, dscale: int) -> tuple[torch.Tensor, ...]:
    """BMN's labels for one video from its ``(K, 2)`` segments in [0, 1]: the ``(D, T)`` map of
    each proposal's best IoU with a segment, and the start / end scores ``(T,)``: the largest share
    of each position's anchor ``[(t - 0.5) / T, (t + 0.5) / T]`` covered by a boundary region (3
    positions wide, centred on a segment's start or end)."""
    gap = 1.0 / tscale
    s, e = segments[:, 0].double().view(1, 1, -1), segments[:, 1].double().view(1, 1, -1)
    t = torch.arange(tscale, dtype=torch.float64).view(1, -1, 1)
    d = torch.arange(dscale, dtype=torch.float64).view(-1, 1, 1)
    p0, p1 = t * gap, (t + d + 1) * gap
    inter = _overlap(p0, p1, s, e)
    iou = (inter / ((p1 - p0) + (e - s) - inter)).amax(-1) if len(segments) else torch.zeros(dscale, tscale)
    anchors0, anchors1 = (t.view(-1, 1) - 0.5) * gap, (t.view(-1, 1) + 0.5) * gap
    half = 1.5 * gap

    def boundary(points: torch.Tensor) -> torch.Tensor:
        if not len(points):
            return torch.zeros(tscale)
        cover = _overlap(anchors0, anchors1, points.view(1, -1) - half, points.view(1, -1) + half)
        return (cover / gap).amax(1)
    return iou.float(), boundary(segments[:, 0].double()).float(), boundary(segments[:, 1].double()).float()


def _weighted_logistic(pred: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """BMN's balanced binary logistic loss: positives weighted ``0.5 r``, negatives ``0.5 r / (r - 1)``
    with ``r`` = entries / positives, summed over the entries and divided by their number."""
    entries = positive.sum() + negative.sum()
    ratio = entries / positive.sum().clamp_min(1)
    coef_pos, coef_neg = 0.5 * ratio, 0.5 * ratio / (ratio - 1).clamp_min(EPS)
    loss = coef_pos * torch.log(pred + EPS) * positive + coef_neg * torch.log(1 - pred + EPS) * negative
    return -loss.sum() / entries.clamp_min(1)


def tem_loss(start: torch.Tensor, end: torch.Tensor, gt_start: torch.Tensor, gt_end: torch.Tensor) -> torch.Tensor:
    """Start and end: positives where the label exceeds 0.5, every other position negative."""
    return sum(_weighted_logistic(p, (g > 0.5).float(), (g <= 0.5).float())
               for p, g in ((start, gt_start), (end, gt_end)))


def pem_reg_loss(pred: torch.Tensor, gt_iou: torch.Tensor, valid: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """L2 on the IoU over the high (> 0.7) entries and as many medium (0.3-0.7] and low (0-0.3]
    valid entries, drawn at random: ``0.5 sum(w (pred - iou)^2) / sum(w)``."""
    high = (gt_iou > 0.7).float()
    medium = ((gt_iou <= 0.7) & (gt_iou > 0.3)).float()
    low = ((gt_iou <= 0.3) & (gt_iou > 0)).float() * valid
    weights = high.clone()
    for part in (medium, low):
        keep = high.sum() / part.sum().clamp_min(1)
        weights += part * (torch.rand(gt_iou.shape, generator=g).to(gt_iou.device) > 1 - keep).float()
    return 0.5 * (weights * (pred - gt_iou) ** 2).sum() / weights.sum().clamp_min(1)


def pem_cls_loss(pred: torch.Tensor, gt_iou: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Positive above IoU 0.9, negative the other valid proposals."""
    return _weighted_logistic(pred, (gt_iou > 0.9).float(), (gt_iou <= 0.9).float() * valid)


def bmn_loss(conf: torch.Tensor, start: torch.Tensor, end: torch.Tensor, gt_iou: torch.Tensor,
             gt_start: torch.Tensor, gt_end: torch.Tensor, valid: torch.Tensor,
             g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    gt_iou = gt_iou * valid
    parts = {"tem": tem_loss(start, end, gt_start, gt_end), "reg": pem_reg_loss(conf[:, 0], gt_iou, valid, g),
             "cls": pem_cls_loss(conf[:, 1], gt_iou, valid)}
    return parts["tem"] + 10 * parts["reg"] + parts["cls"], {k: float(v.detach()) for k, v in parts.items()}


def proposals(conf: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """One video's candidate proposals ``(P, 3)``: ``[xmin, xmax, score]`` in [0, 1], from starts and
    ends that are local peaks or above half their maximum (and the first start, the last end)."""
    tscale, dscale = len(start), conf.shape[1]

    def boundaries(s: torch.Tensor) -> torch.Tensor:
        peak = torch.zeros(tscale, dtype=torch.bool)
        peak[1:-1] = (s[1:-1] > s[2:]) & (s[1:-1] > s[:-2])
        return peak | (s > 0.5 * s.max())
    starts, ends = boundaries(start), boundaries(end)
    starts[0], ends[-1] = True, True
    d = torch.arange(dscale).view(-1, 1)
    t = torch.arange(tscale).view(1, -1)
    stop = t + d + 1
    ok = (stop < tscale) & starts[t.expand_as(stop)] & ends[stop.clamp(max=tscale - 1)]
    dd, tt = ok.nonzero(as_tuple=True)
    score = start[tt] * end[tt + dd + 1] * conf[0, dd, tt] * conf[1, dd, tt]
    return torch.stack([tt / tscale, (tt + dd + 1) / tscale, score], 1)

