"""Regions of a video: masklets `{source frame index: region}` -> the frames they are on and one region per frame.

The full model takes one frame per object (the frame the object is drawn on, or the key frame of a masklet); Lite
takes every frame of a masklet and writes each frame's timestamp into the prompt.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers.utils import logging

from . import validation
from .video import VideoClip, load_video, open_video


logger = logging.get_logger(__name__)


@dataclass
class VideoRegions:
    """The regions of one video sample, frame by frame.

    clip: the sampled video.
    frames: the frames the regions are drawn on, `(H, W, 3)` uint8 each, in source order.
    regions: one region per (object, frame), with the `image_index` of its frame in `frames`.
    placeholders: for each object (each `<region>`), its regions' indices in `regions` and their timestamps in
        seconds (Lite) or `None` (full model).
    """

    clip: VideoClip
    frames: list[np.ndarray]
    regions: list[dict]
    placeholders: list[list[tuple[int, float | None]]]


def parse_masklet(region: Any, sample_index: int, region_index: int) -> tuple[dict[int, Any], int | None]:
    """A video region as {source frame index: region form}, and its key frame (the one the full model uses)."""
    where = f"sample {sample_index}, region {region_index}"
    if isinstance(region, dict) and "masklet" in region:
        masklet = region["masklet"]
        if not isinstance(masklet, dict) or not masklet:
            raise ValueError(f"{where}: a masklet is a non-empty dict {{frame_index: mask | {{'box': ...}} | ...}}.")
        masklet = {_frame(frame, where, "a masklet frame"): form for frame, form in masklet.items()}
        key_frame = region.get("frame")
        if key_frame is None:
            return masklet, None
        if _frame(key_frame, where, "frame") not in masklet:
            raise ValueError(
                f"{where}: key frame {key_frame} is not one of the masklet's frames {sorted(masklet)}; name one of "
                "them."
            )
        return masklet, int(key_frame)
    if isinstance(region, dict) and "frame" in region:
        frame = _frame(region["frame"], where, "frame")
        return {frame: {k: v for k, v in region.items() if k != "frame"}}, frame
    raise ValueError(
        f"{where}: a region of a video must say which frame it is drawn on, "
        '{"frame": k, "mask": ...}, or be a masklet {"masklet": {k: mask, ...}} (k: frame of the source video).'
    )


def _frame(frame: Any, where: str, name: str) -> int:
    """A frame index as a region names it: a non-negative int (checked against the video once it is opened)."""
    if not validation.is_integer(frame):
        raise TypeError(f"{where}: {name} must be an int frame index of the source video, got {frame!r:.40}")
    if frame < 0:
        raise ValueError(f"{where}: {name} {frame} is negative; pass a frame index of the source video (0, 1, ...)")
    return int(frame)


def key_frames_only(masklets: list[dict[int, Any]], key_frames: list[int | None], sample_index: int) -> list[dict]:
    """The full model's view of masklets: each object on its key frame (default its first, with a warning)."""
    chosen = []
    for region_index, (masklet, key_frame) in enumerate(zip(masklets, key_frames)):
        if key_frame is None and len(masklet) > 1:
            logger.warning(
                "sample %d, region %d: the full model takes one frame per object; using the masklet's first frame "
                "%d (name another with {'masklet': ..., 'frame': k}).",
                sample_index,
                region_index,
                min(masklet),
            )
        frame = min(masklet) if key_frame is None else key_frame
        chosen.append({frame: masklet[frame]})
    return chosen


def video_regions(
    video: Any,
    regions: list,
    *,
    object_only: bool,
    fps: float,
    max_frames: int,
    sample_index: int = 0,
) -> VideoRegions:
    """Loads a sample's video (sampled at `fps`, at most `max_frames`, plus the frames regions are drawn on; Lite
    decodes only those) and turns its regions into per-frame regions.

    The regions are checked (their number, their frames against the video's frame count) before any frame is
    decoded."""
    validation.region_count(len(regions), f"sample {sample_index}")
    parsed = [parse_masklet(region, sample_index, i) for i, region in enumerate(regions)]
    masklets = [masklet for masklet, _ in parsed]
    if not object_only:
        masklets = key_frames_only(masklets, [key for _, key in parsed], sample_index)
    annotated = sorted({frame for masklet in masklets for frame in masklet})
    clip = _load_clip(video, masklets, annotated, object_only, fps, max_frames, sample_index)
    try:
        frames = [clip.frame(frame) for frame in annotated]
    except KeyError as error:
        raise ValueError(
            f"sample {sample_index}: regions are drawn on frames {annotated}, but {error.args[0]}; pass masks for the "
            "sampled frames, or the video itself so that the processor can decode those frames."
        ) from None
    flat, placeholders = [], []
    for masklet in masklets:
        group = []
        for frame in sorted(masklet):
            group.append((len(flat), frame / clip.fps if object_only else None))
            flat.append(_with_image_index(masklet[frame], annotated.index(frame)))
        placeholders.append(group)
    return VideoRegions(clip, frames, flat, placeholders)


def _load_clip(
    video: Any,
    masklets: list[dict[int, Any]],
    annotated: list[int],
    object_only: bool,
    fps: float,
    max_frames: int,
    sample_index: int,
) -> VideoClip:
    if isinstance(video, VideoClip):
        return video
    try:
        source = open_video(video)
    except ValueError as error:
        raise ValueError(f"sample {sample_index}: {error}") from error
    with source:
        for region_index, masklet in enumerate(masklets):
            where = f"sample {sample_index}, region {region_index}: {source.name}"
            validation.frame_indices(sorted(masklet), source.num_frames, where)
        try:
            if object_only:
                return load_video(source, frame_indices=annotated)
            return load_video(source, fps=fps, max_frames=max_frames, extra_frames=annotated)
        except ValueError as error:
            raise ValueError(f"sample {sample_index}: {error}") from error


def _with_image_index(form: Any, image_index: int) -> dict:
    if isinstance(form, dict):
        return {**{k: v for k, v in form.items() if k != "type"}, "image_index": image_index}
    return {"mask": form, "image_index": image_index}


__all__ = ["VideoRegions", "parse_masklet", "video_regions"]
