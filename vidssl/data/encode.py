"""Writing videos with PyAV (the synthetic dataset, tests and benchmarks use it)."""

from __future__ import annotations

import os
from fractions import Fraction

import torch


def write_video(
    path: str | os.PathLike[str],
    frames: torch.Tensor,
    fps: float = 25.0,
    codec: str = "libx264",
    gop: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """Encode ``frames`` ``(T, 3, H, W)`` uint8 into ``path`` (container from the extension).

    ``codec``: ``libx264`` (H.264), ``libvpx-vp9`` (VP9), ``mpeg4`` (MPEG-4 Part 2). ``gop`` sets
    the key-frame interval. The file is written next to its destination and renamed into place, so
    an interrupted write never leaves a half file under the final name.
    """
    import av

    if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"expected (T, 3, H, W) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
    path = str(path)
    tmp = f"{os.path.splitext(path)[0]}.partial{os.path.splitext(path)[1]}"
    arr = frames.permute(0, 2, 3, 1).contiguous().numpy()
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("preset", "veryfast")
    with av.open(tmp, mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = arr.shape[2], arr.shape[1]
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.options = opts
        for img in arr:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
