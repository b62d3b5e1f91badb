"""Peak memory of hostile or huge inputs: a decompression bomb, a 20,000 x 20,000 image, 500 regions in one sample, a
2-hour video. Each case either runs within a stated memory bound or fails fast, before allocating, with a clear error.

    python benchmarks/robustness.py [--workdir DIR]

Each case runs in a fresh process (the tiny random model's processor, the original release's settings); the table
gives its outcome, its time, and its peak resident memory above the process's memory before the case (Linux
`VmHWM`, reset through `/proc/self/clear_refs`). The inputs are made first, cheaply: PNG files written row by row
through zlib, videos of 64 x 64 frames at 1 fps with PyAV.
"""

import argparse
import json
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import av
import numpy as np
from common import PeakResidentMemory


PROMPT = "<|im_start|>user\n{media}\nWhat is{regions}?<|im_end|>\n<|im_start|>assistant\n"
FRAME_SIDE = 64

# name -> (what it is, the stated bound)
CASES = {
    "bomb": ("decompression bomb (PNG header: 100,000 x 100,000, 120 bytes)", "refused at open"),
    "png-20k": ("20,000 x 20,000 PNG file", "refused at open"),
    "array-20k": ("20,000 x 20,000 uint8 array in memory", "refused from its shape"),
    "png-12k": ("12,000 x 12,000 PNG file (over MAX_IMAGE_PIXELS, under PIL's bomb limit)", "refused from its header"),
    "regions-256": ("256 boxes on a 640 x 480 image (MAX_REGIONS_PER_SAMPLE)", "crops of 256 regions"),
    "regions-500": ("500 boxes on a 640 x 480 image", "refused before any mask"),
    "video-10min": ("10-minute video, load_video (1 fps: 600 frames)", "600 x 64 x 64 x 3 B = 7 MiB"),
    "video-2h": ("2-hour video, load_video (768 frames sampled)", "768 x 64 x 64 x 3 B = 9 MiB"),
    "video-2h-processor": ("2-hour video through the full processor", "768 sampled frames"),
    "video-5h": ("5-hour video (over MAX_VIDEO_SECONDS)", "refused from its header"),
}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, rows: bool = True) -> Path:
    """A black RGB PNG of `width` x `height`, compressed row by row (never held in memory); without `rows`, only
    its header and a few bytes of data (a decompression bomb's shape)."""
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        compressor = zlib.compressobj(6)
        row = b"\0" * (1 + 3 * width)
        for _ in range(height if rows else 1):
            data = compressor.compress(row)
            if data:
                file.write(png_chunk(b"IDAT", data))
        file.write(png_chunk(b"IDAT", compressor.flush()) + png_chunk(b"IEND", b""))
    return path


def write_video(path: Path, seconds: int) -> Path:
    """A video of `seconds` 64 x 64 frames at 1 fps (mpeg4), each frame a different grey."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=1)
        stream.width = stream.height = FRAME_SIDE
        stream.pix_fmt = "yuv420p"
        for index in range(seconds):
            frame = np.full((FRAME_SIDE, FRAME_SIDE, 3), index % 256, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def make_inputs(workdir: Path) -> None:
    write_png(workdir / "bomb.png", 100_000, 100_000, rows=False)
    write_png(workdir / "png-20k.png", 20_000, 20_000)
    write_png(workdir / "png-12k.png", 12_000, 12_000)
    for name, seconds in (("video-10min", 600), ("video-2h", 7200), ("video-5h", 5 * 3600)):
        write_video(workdir / f"{name}.mp4", seconds)


def run_case(name: str, workdir: Path) -> dict:
    """Runs one case in this process; its outcome, seconds and peak memory above the memory before it (MiB)."""
    from pixelrefer_hf.processing.video import load_video
    from pixelrefer_hf.tiny_random import build_processor

    processor = build_processor()
    photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = [{"box": [(7 * i) % 600, (5 * i) % 440, (7 * i) % 600 + 40, (5 * i) % 440 + 40]} for i in range(500)]

    def regions(count: int):
        text = PROMPT.format(media="<image>", regions=" <region>" * count)
        return processor(text=text, images=[photo], regions=[boxes[:count]])

    def image(source):
        return processor(text=PROMPT.format(media="<image>", regions=""), images=[source])

    def video(path: Path):
        return processor(text=PROMPT.format(media="<video>", regions=""), videos=[str(path)])

    cases = {
        "bomb": lambda: image(str(workdir / "bomb.png")),
        "png-20k": lambda: image(str(workdir / "png-20k.png")),
        "array-20k": lambda: image(np.zeros((20_000, 20_000, 3), np.uint8)),  # pages untouched: not resident yet
        "png-12k": lambda: image(str(workdir / "png-12k.png")),
        "regions-256": lambda: regions(256),
        "regions-500": lambda: regions(500),
        "video-10min": lambda: load_video(workdir / "video-10min.mp4"),
        "video-2h": lambda: load_video(workdir / "video-2h.mp4"),
        "video-2h-processor": lambda: video(workdir / "video-2h.mp4"),
        "video-5h": lambda: load_video(workdir / "video-5h.mp4"),
    }
    with PeakResidentMemory() as memory:
        start = time.perf_counter()
        try:
            outcome = _describe(cases[name]())
        except (ValueError, TypeError) as error:
            outcome = f"{type(error).__name__}: {str(error)[:110]}"
        seconds = time.perf_counter() - start
    return {"outcome": outcome, "seconds": seconds, "peak_mib": memory.growth / 2**20}


def _describe(result) -> str:
    if hasattr(result, "frames"):
        return f"ok: {len(result.frames)} frames {tuple(result.frames.shape[1:3])} decoded"
    return f"ok: {result['input_ids'].shape[1]} tokens"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="folder for the generated inputs (default: a temporary one)")
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)  # one case, in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.workdir)))
        return
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        make_inputs(workdir)
        print(f"inputs made in {time.perf_counter() - start:.1f} s\n")
        print("| case | outcome | time (s) | peak memory above baseline (MiB) | bound |")
        print("|---|---|---|---|---|")
        for name, (what, bound) in CASES.items():
            command = [sys.executable, __file__, "--case", name, "--workdir", str(workdir)]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            report = json.loads(output.strip().splitlines()[-1])
            outcome = report["outcome"].replace("|", "/")
            print(f"| {what} | {outcome} | {report['seconds']:.2f} | {report['peak_mib']:.0f} | {bound} |")


if __name__ == "__main__":
    main()
