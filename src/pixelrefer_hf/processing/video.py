"""Video decoding with PyAV, frame sampling and timestamps, as the original release samples them.

The original samples `fps` frames per second of video, one from the middle of each segment of
`int(source_fps // fps)` frames (falling back to `max_frames` uniformly spaced frames for long videos), or a fixed
number of uniformly spaced frames (`np.linspace(0, n - 1, k, dtype=int)`); a folder of frame images counts as a
3-fps video. A frame's timestamp is its index divided by the video's average frame rate.
"""

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from PIL import Image

from . import validation


FOLDER_FPS = 3.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class VideoClip:
    """Sampled frames of a video.

    frames: `(T, H, W, 3)` uint8 RGB, the sampled frames.
    indices: index of each sampled frame in the source video.
    timestamps: seconds of each sampled frame (`index / fps`).
    fps: average frame rate of the source.
    extra_frames: other frames of the source decoded on request (e.g. the frame a region is drawn on), by index.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    extra_frames: dict[int, np.ndarray] = field(default_factory=dict)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` of the source video (sampled or decoded on request)."""
        if index in self.indices:
            return self.frames[self.indices.index(index)]
        if index in self.extra_frames:
            return self.extra_frames[index]
        raise KeyError(
            f"frame {index} of the source video was not decoded; pass it in `extra_frames` when loading "
            f"(sampled frames: {self.indices})"
        )


def sample_indices(num_frames: int, source_fps: float, fps: float | None = 1.0, max_frames: int = 768) -> list[int]:
    """Indices of the frames the original release samples from a video of `num_frames` frames at `source_fps`."""
    if fps is not None and num_frames / source_fps < max_frames:
        segment = min(source_fps // fps, num_frames)
        if segment >= 1:
            return np.arange(segment // 2, num_frames, segment, dtype=int).tolist()
    if num_frames <= max_frames:
        return list(range(num_frames))
    return np.linspace(0, num_frames - 1, max_frames, dtype=int).tolist()


def load_video(
    video: "str | os.PathLike | BinaryIO | bytes | np.ndarray | Sequence",
    *,
    fps: float | None = 1.0,
    max_frames: int = 768,
    frame_indices: Sequence[int] | None = None,
    extra_frames: Sequence[int] = (),
    source_fps: float | None = None,
) -> VideoClip:
    """Decodes and samples a video.

    Args:
        video: a video file (path, file object or bytes), a folder of frame images (sorted by name, 3 fps), or
            frames already in memory (`(T, H, W, 3)` uint8 array, or a list of arrays / PIL images).
        fps: frames to sample per second of video; None samples `max_frames` uniformly spaced frames.
        max_frames: most frames sampled.
        frame_indices: sample exactly these source frames instead (e.g. the frames a masklet is annotated on).
        extra_frames: further source frames to decode (frames regions are drawn on that are not sampled).
        source_fps: frame rate of in-memory frames (default 1; ignored for files, which know theirs).
    Returns:
        The sampled frames with their source indices and timestamps.
    """
    name = _describe(video)
    if isinstance(video, (np.ndarray, list, tuple)):
        frames = _in_memory_frames(video, name)
        source_fps, total = float(source_fps or 1.0), len(frames)
        reader = lambda wanted: {i: frames[i] for i in wanted}  # noqa: E731
    elif isinstance(video, (str, os.PathLike)) and Path(video).is_dir():
        files = sorted(p for p in Path(video).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        source_fps, total = FOLDER_FPS, len(files)
        reader = lambda wanted: {i: np.asarray(Image.open(files[i]).convert("RGB")) for i in wanted}  # noqa: E731
    else:
        source_fps, total, reader = _open_container(video, name)
    if total == 0:
        raise ValueError(f"{name} has no frames; pass a video with at least one frame.")

    indices = list(frame_indices) if frame_indices is not None else sample_indices(total, source_fps, fps, max_frames)
    wanted = sorted(set(validation.frame_indices([*indices, *extra_frames], total, name)))
    decoded = reader(wanted)
    return VideoClip(
        frames=np.stack([decoded[i] for i in indices]),
        indices=indices,
        timestamps=[i / source_fps for i in indices],
        fps=source_fps,
        extra_frames={i: decoded[i] for i in extra_frames if i not in indices},
    )


def _describe(video) -> str:
    if isinstance(video, (str, os.PathLike)):
        return f"video {str(video)!r}"
    return f"the {type(video).__name__} video"


def _in_memory_frames(video, name: str) -> list[np.ndarray]:
    frames = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in video]
    if not frames:
        raise ValueError(f"{name} has no frames; pass a video with at least one frame.")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or frames[0].ndim != 3 or frames[0].shape[-1] != 3 or frames[0].dtype != np.uint8:
        raise ValueError(
            f"{name}: in-memory frames must all be uint8 (H, W, 3) RGB of one size, got shapes {sorted(shapes)} "
            f"and dtype {frames[0].dtype}."
        )
    return frames


def _open_container(video, name: str):
    """Frame rate, frame count and a reader of selected frames (one decoding pass, converting only those)."""
    source = io.BytesIO(video) if isinstance(video, bytes) else video
    try:
        container = av.open(source)
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError, OSError) as error:
        raise ValueError(
            f"Cannot read {name} as a video ({error}); pass an mp4/webm/... file or a frame folder."
        ) from error

    def decoded():
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError as error:
            raise ValueError(f"{name} is corrupt: decoding failed ({error}).") from error

    fps = float(stream.average_rate) if stream.average_rate else 1.0
    total = stream.frames
    if not total:
        total = sum(1 for _ in decoded())
        container.seek(0)

    def reader(wanted: list[int]) -> dict[int, np.ndarray]:
        out, remaining = {}, set(wanted)
        for index, frame in enumerate(decoded()):
            if index in remaining:
                out[index] = frame.to_ndarray(format="rgb24")
                remaining.discard(index)
                if not remaining:
                    break
        container.close()
        if remaining:
            raise ValueError(
                f"{name} declares {total} frames but frames {sorted(remaining)} could not be decoded; the file is "
                "truncated or corrupt."
            )
        return out

    return fps, total, reader


__all__ = ["VideoClip", "load_video", "sample_indices"]
