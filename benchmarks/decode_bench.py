"""Decode throughput per sampler and backend on generated H.264 (long and short GOP), VP9 and
MPEG-4 files, against decoding each whole video, and the peak memory of one decoding process
(one DataLoader worker's worth of work).

    python benchmarks/decode_bench.py [--videos 6 --frames 250 --width 320 --height 240]

Prints a markdown table (paste it into docs/benchmarks.md with the machine it ran on).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

FORMATS = {
    "h264_gop250": ("mp4", "libx264", 250),
    "h264_gop25": ("mp4", "libx264", 25),
    "vp9": ("webm", "libvpx-vp9", None),
    "mpeg4_avi": ("avi", "mpeg4", 12),
}


def make_videos(out: Path, n: int, frames: int, width: int, height: int) -> dict[str, list[Path]]:
    from vidssl.data.encode import write_video

    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, height // 8, width // 8), generator=g, dtype=torch.uint8)
    files: dict[str, list[Path]] = {k: [] for k in FORMATS}
    for i in range(n):
        # A smooth, moving pattern (compresses like real video, unlike white noise).
        clip = torch.stack([
            torch.nn.functional.interpolate(base[None].float(), size=(height, width), mode="bilinear")[0]
            .roll(shifts=(t + i, 2 * t), dims=(1, 2)).to(torch.uint8)
            for t in range(frames)
        ])
        for name, (ext, codec, gop) in FORMATS.items():
            path = out / f"{name}_{i}.{ext}"
            write_video(path, clip, codec=codec, gop=gop)
            files[name].append(path)
    return files


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (``ru_maxrss`` survives ``execve`` on Linux and
    would report the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(backend: str, files: list[str]) -> None:
    """Child process: benchmark one backend on one format; print JSON rows and peak RSS."""
    from vidssl.data.bench import bench_sampler, default_samplers
    from vidssl.data.dataset import FileOpener
    from vidssl.data.records import VideoRecord

    records = [VideoRecord(f) for f in files]
    opener = FileOpener(backend)
    rss0 = _status_mb("VmRSS")  # after importing torch and the decoders
    rows = [bench_sampler(records, opener, None, backend, "full_decode")]
    for name, sampler in default_samplers().items():
        rows.append(bench_sampler(records, opener, sampler, backend, name))
    print(json.dumps({"rows": [r.__dict__ for r in rows], "peak_mb": _status_mb("VmHWM"), "start_mb": rss0}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1:])
        return

    from vidssl.data.bench import BenchRow
    from vidssl.data.decoders import torchcodec_available

    backends = ["pyav"] + (["torchcodec"] if torchcodec_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        files = make_videos(Path(tmp), args.videos, args.frames, args.width, args.height)
        print(f"# {args.videos} videos x {args.frames} frames at {args.width}x{args.height}; "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
        print("| format | backend | sampler | frames/sample | ms/sample | frames/s "
              "| vs whole-video decode | peak RSS MB (after imports) |")
        print("|---|---|---|---:|---:|---:|---:|---|")
        for fmt, paths in files.items():
            for backend in backends:
                res = subprocess.run([sys.executable, __file__, "--worker", backend, *map(str, paths)],
                                     capture_output=True, text=True, check=True)
                data = json.loads(res.stdout.strip().splitlines()[-1])
                rows = [BenchRow(**r) for r in data["rows"]]
                full = rows[0]
                for r in rows:
                    speed = f"{full.ms_per_sample / r.ms_per_sample:.1f}x"
                    print(f"| {fmt} | {backend} | {r.sampler} | {r.frames / r.samples:.0f} | "
                          f"{r.ms_per_sample:.1f} | {r.frames_per_s:.0f} | {speed} | "
                          f"{data['peak_mb']:.0f} ({data['start_mb']:.0f}) |")


if __name__ == "__main__":
    main()
