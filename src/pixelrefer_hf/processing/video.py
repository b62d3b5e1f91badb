"""Video decoding with PyAV, frame sampling and timestamps, as the original release samples them.

The original samples `fps` frames per second of video, one from the middle of each segment of
`int(source_fps // fps)` frames (falling back to `max_frames` uniformly spaced frames for long videos), or a fixed
number of uniformly spaced frames (`np.linspace(0, n - 1, k, dtype=int)`); a folder of frame images counts as a
3-fps video. A frame's timestamp is its index divided by the video's average frame rate.
"""

import io
import os
from collections.abc import Callable, Iterator, Sequence
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


@dataclass
class VideoSource:
    """An opened video whose frames are not decoded yet: its frame count, frame rate and frame size, from its header.

    name: how messages name it (`"video 'clip.mp4'"`).
    num_frames: frames of the video (of a frame folder: its image files).
    fps: average frame rate (a frame folder: `FOLDER_FPS`; in-memory frames: their `source_fps`, default 1).
    frame_size: `(H, W)` of its frames.
    read: `read(indices)` yields `(index, (H, W, 3) uint8 frame)` for the sorted, distinct `indices`, decoding the
        video once and converting only those frames.
    close: releases the file (a `VideoSource` is also a context manager).
    """

    name: str
    num_frames: int
    fps: float
    frame_size: tuple[int, int]
    read: Callable[[list[int]], Iterator[tuple[int, np.ndarray]]]
    close: Callable[[], None] = lambda: None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_video(
    video: "str | os.PathLike | BinaryIO | bytes | np.ndarray | Sequence", source_fps: float | None = None
) -> VideoSource:
    """Opens a video file (path, file object or bytes), a folder of frame images or in-memory frames, reading only
    its header (see [`load_video`] for the sources).

    Raises a `ValueError` naming the video when it cannot be read, has no frames, has frames of more than
    `validation.MAX_IMAGE_PIXELS` pixels, or (files and folders) lasts longer than `validation.MAX_VIDEO_SECONDS`.
    """
    name = _describe(video)
    if isinstance(video, (np.ndarray, list, tuple)):
        source = _in_memory_source(video, name, float(source_fps or 1.0))
    elif isinstance(video, (str, os.PathLike)) and Path(video).is_dir():
        source = _folder_source(Path(video), name)
    else:
        source = _container_source(video, name)
    if source.num_frames == 0:
        source.close()
        raise ValueError(f"{name} has no frames; pass a video with at least one frame.")
    try:
        validation.image_pixels(*source.frame_size, f"{name}: a frame")
        if not isinstance(video, (np.ndarray, list, tuple)):
            _check_duration(source)
    except ValueError:
        source.close()
        raise
    return source


def load_video(
    video: "str | os.PathLike | BinaryIO | bytes | np.ndarray | Sequence | VideoSource",
    *,
    fps: float | None = 1.0,
    max_frames: int = 768,
    frame_indices: Sequence[int] | None = None,
    extra_frames: Sequence[int] = (),
    source_fps: float | None = None,
) -> VideoClip:
    """Decodes and samples a video.

    Only the frames it samples (and `extra_frames`) are converted to arrays, written once into the clip: its memory
    is `(sampled + extra frames) * H * W * 3` bytes whatever the video's length, and more than
    `validation.MAX_DECODED_VIDEO_BYTES` is refused before decoding.

    Args:
        video: a video file (path, file object or bytes), a folder of frame images (sorted by name, 3 fps; files
            without an image suffix and hidden files are not frames), frames already in memory (`(T, H, W, 3)` uint8
            array, or a list of arrays / PIL images), or a [`VideoSource`] of `open_video` (closed afterwards).
        fps: frames to sample per second of video; None samples `max_frames` uniformly spaced frames.
        max_frames: most frames sampled.
        frame_indices: sample exactly these source frames instead (e.g. the frames a masklet is annotated on).
        extra_frames: further source frames to decode (frames regions are drawn on that are not sampled).
        source_fps: frame rate of in-memory frames (default 1; ignored for files, which know theirs).
    Returns:
        The sampled frames with their source indices and timestamps.
    Raises:
        `ValueError` naming the video: unreadable, corrupt or truncated (including a file that declares more frames
        than it holds), a frame index outside it, or over a limit of `validation`.
    """
    source = video if isinstance(video, VideoSource) else open_video(video, source_fps)
    with source:
        if frame_indices is not None:
            indices = list(frame_indices)
        else:
            indices = sample_indices(source.num_frames, source.fps, fps, max_frames)
        wanted = sorted(set(validation.frame_indices([*indices, *extra_frames], source.num_frames, source.name)))
        _check_decoded_bytes(source, len(wanted))
        frames, extra = _decode(source, indices, wanted, set(extra_frames) - set(indices))
    return VideoClip(
        frames=frames,
        indices=indices,
        timestamps=[i / source.fps for i in indices],
        fps=source.fps,
        extra_frames=extra,
    )


def frame_files(folder: str | os.PathLike) -> list[Path]:
    """The frame images of a frame folder, sorted by name: files with an image suffix (`IMAGE_SUFFIXES`), hidden
    files (such as macOS `._*` companions) left out."""
    paths = Path(folder).iterdir()
    return sorted(path for path in paths if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))


def _describe(video) -> str:
    if isinstance(video, (str, os.PathLike)):
        return f"video {str(video)!r}"
    return f"the {type(video).__name__} video"


def _check_duration(source: VideoSource) -> None:
    seconds = source.num_frames / source.fps
    if seconds > validation.MAX_VIDEO_SECONDS:
        raise ValueError(
            f"{source.name} lasts {seconds:.0f} s ({source.num_frames} frames at {source.fps:g} fps), longer than "
            f"MAX_VIDEO_SECONDS = {validation.MAX_VIDEO_SECONDS} s; pass a shorter clip (or raise "
            "pixelrefer_hf.processing.validation.MAX_VIDEO_SECONDS)."
        )


def _check_decoded_bytes(source: VideoSource, num_frames: int) -> None:
    height, width = source.frame_size
    needed = num_frames * height * width * 3
    if needed > validation.MAX_DECODED_VIDEO_BYTES:
        raise ValueError(
            f"{source.name}: decoding {num_frames} frames of {width} x {height} takes {needed / 2**20:,.0f} MiB, "
            f"more than MAX_DECODED_VIDEO_BYTES = {validation.MAX_DECODED_VIDEO_BYTES / 2**20:,.0f} MiB; sample fewer "
            "frames (`max_frames`, the processor's `video_max_frames`), pass a downscaled video, or raise "
            "pixelrefer_hf.processing.validation.MAX_DECODED_VIDEO_BYTES."
        )


def _decode(
    source: VideoSource, indices: list[int], wanted: list[int], extra: set[int]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The `(len(indices), H, W, 3)` frames at `indices` (each decoded frame written once into them) and the
    `extra` frames by index."""
    rows: dict[int, list[int]] = {}
    for row, index in enumerate(indices):
        rows.setdefault(index, []).append(row)
    frames, extra_frames = np.empty((0, *source.frame_size, 3), dtype=np.uint8), {}
    for position, (index, frame) in enumerate(source.read(wanted)):
        if position == 0:
            frames = np.empty((len(indices), *frame.shape), dtype=np.uint8)
        elif frame.shape != frames.shape[1:]:
            raise ValueError(
                f"{source.name}: frame {index} has shape {frame.shape} but its earlier frames {frames.shape[1:]}; "
                "pass a video whose frames all have one size."
            )
        frames[rows.get(index, [])] = frame
        if index in extra:
            extra_frames[index] = frame
    return frames, extra_frames


def _in_memory_source(video, name: str, fps: float) -> VideoSource:
    frames = [np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in video]
    if not frames:
        raise ValueError(f"{name} has no frames; pass a video with at least one frame.")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or frames[0].ndim != 3 or frames[0].shape[-1] != 3 or frames[0].dtype != np.uint8:
        raise ValueError(
            f"{name}: in-memory frames must all be uint8 (H, W, 3) RGB of one size, got shapes {sorted(shapes)} "
            f"and dtype {frames[0].dtype}."
        )
    return VideoSource(name, len(frames), fps, frames[0].shape[:2], lambda wanted: ((i, frames[i]) for i in wanted))


def _folder_source(folder: Path, name: str) -> VideoSource:
    files = frame_files(folder)
    size = validation.image_file_size(files[0], name) if files else (0, 0)

    def read(wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        for index in wanted:
            yield index, validation.load_image_file(files[index], f"{name}, frame {index}")

    return VideoSource(name, len(files), FOLDER_FPS, size, read)


def _container_source(video, name: str) -> VideoSource:
    """A video file opened with PyAV: one decoding pass for all wanted frames, converting only those."""
    unreadable = "Cannot read {} as a video ({}); pass an mp4/webm/... file or a frame folder."
    try:
        container = av.open(io.BytesIO(video) if isinstance(video, bytes) else video)
    except (av.error.FFmpegError, OSError) as error:
        raise ValueError(unreadable.format(name, error)) from error
    try:
        stream = container.streams.video[0]
        total = stream.frames or _count_frames(container, stream)
    except (av.error.FFmpegError, IndexError, OSError) as error:
        container.close()
        raise ValueError(unreadable.format(name, error)) from error
    fps = float(stream.average_rate) if stream.average_rate else 1.0

    def read(wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        remaining = set(wanted)
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in remaining:
                    yield index, frame.to_ndarray(format="rgb24")
                    remaining.discard(index)
                    if not remaining:
                        return
        except av.error.FFmpegError as error:
            raise ValueError(f"{name} is corrupt: decoding failed ({error}).") from error
        raise ValueError(
            f"{name} declares {total} frames but frames {sorted(remaining)} could not be decoded; the file is "
            "truncated or corrupt."
        )

    size = (stream.codec_context.height, stream.codec_context.width)
    return VideoSource(name, total, fps, size, read, container.close)


def _count_frames(container, stream) -> int:
    """Frames of a stream whose header does not say (e.g. WebM), counted from its packets without decoding them."""
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


__all__ = ["VideoClip", "VideoSource", "frame_files", "load_video", "open_video", "sample_indices"]
