"""The online monitor (``train.monitor_every``): while a run trains, how good is its encoder?

Every ``monitor_every`` steps and at the last step, the main rank embeds a labelled held-out split
with the online backbone (eval mode, no gradient, no random draws: a monitored run resumes exactly
as an unmonitored one) and reports kNN top-1 (:mod:`vidssl.eval.knn`): gallery = up to
``monitor_videos`` labelled training videos, queries = as many of the test split's. Order heads
report their training accuracy with every log line (``order_acc``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vidssl.data.records import VideoSource
from vidssl.data.sources import load_source
from vidssl.errors import ConfigError
from vidssl.eval.features import EvalClips, Protocol, embed_all
from vidssl.eval.knn import knn_predict


@dataclass
class KNNMonitor:
    gallery: EvalClips
    queries: EvalClips
    num_classes: int

    @staticmethod
    def _features(clips: EvalClips, backbone: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        features, ok_idx = embed_all(backbone, clips, 16, device=next(backbone.parameters()).device)
        return features, torch.tensor([clips.source.records[i].label for i in ok_idx])

    def __call__(self, backbone: torch.nn.Module) -> dict[str, float]:
        was_training = backbone.training
        backbone.eval()
        try:
            gallery, gallery_labels = self._features(self.gallery, backbone)
            queries, labels = self._features(self.queries, backbone)
        finally:
            backbone.train(was_training)
        predicted = knn_predict(gallery, gallery_labels, queries, self.num_classes)
        return {"knn_top1": 100.0 * float((predicted == labels).float().mean())}


def _subset(source: VideoSource, n: int) -> VideoSource:
    """Up to ``n`` labelled records, evenly spaced (the built-in set interleaves its classes)."""
    records = [r for r in source.records if r.label is not None]
    step = max(len(records) // n, 1)
    return replace(source, records=records[::step][:n], problems=[])


def build_monitor(cfg, clip_len: int, kind: str) -> KNNMonitor | None:
    """The monitor ``cfg.train`` asks for (``None`` when ``monitor_every`` is 0)."""
    t, d = cfg.train, cfg.data
    if t.monitor_every <= 0:
        return None
    if d.source == "synthetic":
        videos = d.synthetic()
        train, test, opener = videos.source("train"), videos.source("test"), videos.open
    else:
        from vidssl.data.dataset import FileOpener

        train = load_source(d.source, d.layout, d.split, "train", d.root or None)
        test = load_source(d.source, d.layout, d.split, "test", d.root or None)
        opener = FileOpener(d.backend)
    train, test = _subset(train, t.monitor_videos), _subset(test, t.monitor_videos)
    if not train.records or not test.records or not train.class_names:
        raise ConfigError(f"train.monitor_every needs labelled train and test splits; {d.source} has "
                          f"{len(train.records)} labelled train and {len(test.records)} test videos")
    a = cfg.augment
    protocol = (Protocol("frames", 4, crop=a.size) if kind == "2d"
                else Protocol("clips", 2, clip_len=clip_len, crop=a.size))
    return KNNMonitor(EvalClips(train, opener, protocol, a.mean, a.std),
                      EvalClips(test, opener, protocol, a.mean, a.std), len(train.class_names))
