"""SAM2 prompts: checks of one point, box or mask prompt per object, and their conversion to model inputs.

Point and box coordinates are scaled from frame pixels to the model's square input as `Sam2VideoProcessor`'s
`_normalize_coordinates` does, and mask prompts are resized to it and binarised as its video processor does. Every
error names the object (its index in the prompt list) and what to pass instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.utils import logging

from ..processing.regions import region_to_mask


logger = logging.get_logger(__name__)

MaskInput = Union[np.ndarray, torch.Tensor, Image.Image]

PROMPT_KINDS = ("mask", "box", "points")
PROMPT_KEYS = frozenset((*PROMPT_KINDS, "labels", "frame"))
PROMPT_FORMS = (
    '{"mask": <(H, W) binary mask>}, {"box": [x0, y0, x1, y1]} (pixels) or '
    '{"points": [[x, y], ...], "labels": [1, 0, ...]} (pixels; labels optional, 1 = object, 0 = background), '
    'each optionally with "frame": <frame index>'
)
# SAM's point labels for the top-left and bottom-right corners of a box prompt.
BOX_CORNER_LABELS = (2, 3)
# Mask prompts are resized to the model's input size and binarised at this value, as in Sam2VideoProcessor.
MASK_RESIZE_THRESHOLD = 0.5


@dataclass
class ObjectInputs:
    """One object's prompt in the model's input space.

    Exactly one of `point_coords` (with `point_labels`) and `mask` is set.
    """

    frame: int
    point_coords: torch.Tensor | None = None  # (1, 1, N, 2) float32, pixels of the model's square input
    point_labels: torch.Tensor | None = None  # (1, 1, N) int32: 1 object, 0 background, 2/3 box corners
    mask: torch.Tensor | None = None  # (1, 1, S, S) float32 in {0, 1}


def _as_float_array(index: int, name: str, value: Any) -> np.ndarray:
    """Converts a box or point list to a finite float64 array, or raises naming the object."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"object {index}: {name} must be numbers, got {value!r}; pass {PROMPT_FORMS}") from error
    if not np.isfinite(array).all():
        raise ValueError(f"object {index}: {name} {value!r} has non-finite values; pass finite pixel coordinates")
    return array


def _check_frame(index: int, frame: Any, num_frames: int, key: str) -> int:
    """Checks a prompt's frame index (given as `key`) against the video length."""
    if isinstance(frame, bool) or not isinstance(frame, numbers.Integral):
        raise TypeError(f"object {index}: {key} must be an int frame index, got {frame!r}")
    if not 0 <= frame < num_frames:
        raise ValueError(
            f"object {index}: {key}={frame} is outside the video of {num_frames} frames; "
            f"pass a frame index in 0..{num_frames - 1}"
        )
    return int(frame)


def _box_inputs(index: int, box: Any, size: tuple[int, int], scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pixel box `[x0, y0, x1, y1]` as SAM corner points `(2, 2)` in model space and their labels `(2,)`."""
    height, width = size
    array = _as_float_array(index, "box", box)
    if array.shape != (4,):
        raise ValueError(f"object {index}: box {box!r} must have 4 numbers; pass [x0, y0, x1, y1] in pixels")
    x0, y0, x1, y1 = array
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"object {index}: box {box!r} has x1 <= x0 or y1 <= y0; pass [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"object {index}: box {box!r} lies outside the {width}x{height} (WxH) frame; "
            f"pass pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    return array.reshape(2, 2) * scale, np.array(BOX_CORNER_LABELS)


def _point_labels(index: int, labels: Any, num_points: int) -> np.ndarray:
    """The points' labels, `(N,)`: all 1 (object) when not given, else checked to be one 0 or 1 per point."""
    if labels is None:
        return np.ones(num_points, dtype=np.int64)
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or len(label_array) != num_points:
        raise ValueError(
            f"object {index}: {label_array.size} labels for {num_points} points; "
            "pass one label per point (1 = object, 0 = background) or leave labels out"
        )
    if not np.isin(label_array, (0, 1)).all():
        raise ValueError(f"object {index}: labels {np.asarray(labels).tolist()} must be 1 (object) or 0 (background)")
    return label_array


def _point_inputs(
    index: int, points: Any, labels: Any, size: tuple[int, int], scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel points `[[x, y], ...]` as `(N, 2)` points in model space and their `(N,)` labels."""
    height, width = size
    array = _as_float_array(index, "points", points)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(
            f"object {index}: points must have shape (N, 2) with N >= 1, got shape {array.shape}; "
            "pass [[x, y], ...] in pixels (one point is [[x, y]])"
        )
    outside = np.flatnonzero((array[:, 0] < 0) | (array[:, 0] > width) | (array[:, 1] < 0) | (array[:, 1] > height))
    if outside.size:
        raise ValueError(
            f"object {index}: point {outside[0]} {array[outside[0]].tolist()} lies outside the {width}x{height} "
            f"(WxH) frame; pass pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    return array * scale, _point_labels(index, labels, len(array))


def _mask_input(index: int, mask: MaskInput, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """A binary `(H, W)` mask resized to the model's `(1, 1, S, S)` mask input, as Sam2VideoProcessor does."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    elif not isinstance(mask, np.ndarray):
        raise TypeError(
            f"object {index}: mask is a {type(mask).__name__}; pass an (H, W) binary numpy array, tensor or PIL image"
        )
    if mask.shape != size:
        raise ValueError(
            f"object {index}: mask has shape {mask.shape} but the frames are {size} (HxW); "
            "pass a binary mask of the frame's size"
        )
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"object {index}: mask is not binary (values {np.unique(mask)[:5].tolist()}...); "
            "pass a bool or {0, 1} mask (e.g. mask > 0)"
        )
    if not mask.any():
        raise ValueError(f"object {index}: mask is empty; pass a mask with at least one object pixel")
    mask_input = torch.from_numpy(mask.astype(np.float32))[None, None]
    if size != (image_size, image_size):
        mask_input = F.interpolate(
            mask_input, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        mask_input = (mask_input >= MASK_RESIZE_THRESHOLD).float()
        if not mask_input.any():
            logger.warning_once(
                "object %d: the mask vanishes when resized to %dx%d; its masklet will likely be empty",
                index,
                image_size,
                image_size,
            )
    return mask_input


def _prompt_kind(index: int, prompt: Any) -> str:
    """Checks one object's prompt dict and returns its kind: "mask", "box" or "points"."""
    if not isinstance(prompt, Mapping):
        raise TypeError(f"object {index}: the prompt is a {type(prompt).__name__}; pass a dict: {PROMPT_FORMS}")
    unknown = sorted(set(prompt) - PROMPT_KEYS, key=str)
    if unknown:
        raise ValueError(f"object {index}: unknown prompt keys {unknown}; pass {PROMPT_FORMS}")
    kinds = [kind for kind in PROMPT_KINDS if kind in prompt]
    if len(kinds) != 1:
        found = f"several prompt kinds ({', '.join(kinds)})" if kinds else "no mask, box or points"
        raise ValueError(f"object {index}: the prompt has {found}; pass exactly one of {PROMPT_FORMS}")
    if "labels" in prompt and kinds[0] != "points":
        raise ValueError(f"object {index}: labels only go with points; drop them from the {kinds[0]} prompt")
    return kinds[0]


def _object_inputs(
    index: int,
    prompt: Any,
    prompt_frame: int,
    num_frames: int,
    size: tuple[int, int],
    image_size: int,
) -> ObjectInputs:
    """Checks one object's prompt and converts it to model inputs."""
    kind = _prompt_kind(index, prompt)
    if "frame" in prompt:
        frame = _check_frame(index, prompt["frame"], num_frames, "frame")
    else:
        frame = _check_frame(index, prompt_frame, num_frames, "prompt_frame")

    if kind == "mask":
        return ObjectInputs(frame=frame, mask=_mask_input(index, prompt["mask"], size, image_size))
    # Pixel (x, y) -> model input pixels, as Sam2VideoProcessor._normalize_coordinates.
    scale = np.array([image_size / size[1], image_size / size[0]])
    if kind == "box":
        coords, labels = _box_inputs(index, prompt["box"], size, scale)
    else:
        coords, labels = _point_inputs(index, prompt["points"], prompt.get("labels"), size, scale)
    return ObjectInputs(
        frame=frame,
        point_coords=torch.tensor(coords, dtype=torch.float32)[None, None],
        point_labels=torch.tensor(labels, dtype=torch.int32)[None, None],
    )


def prompts_to_inputs(
    prompts: Sequence[Mapping[str, Any]],
    prompt_frame: int,
    num_frames: int,
    size: tuple[int, int],
    image_size: int,
) -> list[ObjectInputs]:
    """Checks the list of prompts, one per object, and converts each to model inputs, in prompt order.

    Args:
        prompts: one prompt dict per object (see `PROMPT_FORMS`).
        prompt_frame: the frame of the prompts that give no `"frame"` of their own.
        num_frames: the video's length.
        size: the frames' `(H, W)`.
        image_size: side `S` of the model's square input.
    """
    if isinstance(prompts, (Mapping, str)) or not isinstance(prompts, Sequence):
        raise TypeError(
            f"prompts is a {type(prompts).__name__}; pass a list with one prompt dict per object "
            "(wrap a single prompt in a list)"
        )
    if not prompts:
        raise ValueError(f"no prompts: pass one prompt per object, each {PROMPT_FORMS}")
    return [
        _object_inputs(index, prompt, prompt_frame, num_frames, size, image_size)
        for index, prompt in enumerate(prompts)
    ]


def prompt_as_mask(index: int, prompt: dict, size: tuple[int, int], point_radius: int = 14) -> np.ndarray:
    """The object's mask on its prompt frame when the model finds nothing there: the prompt mask or box itself, or
    squares of `2 * point_radius` pixels around the positive points."""
    if "mask" in prompt or "box" in prompt:
        key = "mask" if "mask" in prompt else "box"
        return region_to_mask({key: prompt[key]}, size, region_index=index)
    points = np.asarray(prompt["points"], dtype=float).reshape(-1, 2)
    labels = np.asarray(prompt.get("labels", [1] * len(points))).reshape(-1)
    mask = np.zeros(size, dtype=np.uint8)
    for x, y in points[labels == 1]:
        mask[
            max(0, int(y) - point_radius) : int(y) + point_radius,
            max(0, int(x) - point_radius) : int(x) + point_radius,
        ] = 1
    if not mask.any():
        raise ValueError(f"object {index}: the segmenter found nothing and the prompt has no positive point.")
    logger.warning_once("object %d: the segmenter found nothing at the points; using squares around them.", index)
    return mask
