"""SAM2 prompts: checks of one point, box or mask prompt per object, and their conversion to model inputs.

Point and box coordinates are scaled from frame pixels to the model's square input as `Sam2VideoProcessor`'s
`_normalize_coordinates` does, and mask prompts are resized to it and binarised as its video processor does. Every
error names the object (its index in the prompt list) and what to pass instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.utils import logging

from ..processing.regions import region_to_mask
from ..processing.validation import MaskInput, binary_mask, frame_index, pixel_box, pixel_points


logger = logging.get_logger(__name__)

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


def _mask_input(where: str, mask: MaskInput, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """A binary `(H, W)` mask resized to the model's `(1, 1, S, S)` mask input, as Sam2VideoProcessor does."""
    mask_input = torch.from_numpy(binary_mask(mask, size, where).astype(np.float32))[None, None]
    if size != (image_size, image_size):
        mask_input = F.interpolate(
            mask_input, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        mask_input = (mask_input >= MASK_RESIZE_THRESHOLD).float()
        if not mask_input.any():
            logger.warning_once(
                "%s: the mask vanishes when resized to %dx%d; its masklet will likely be empty",
                where,
                image_size,
                image_size,
            )
    return mask_input


def _prompt_kind(where: str, prompt: Any) -> str:
    """Checks one object's prompt dict and returns its kind: "mask", "box" or "points"."""
    if not isinstance(prompt, Mapping):
        raise TypeError(f"{where}: the prompt is a {type(prompt).__name__}; pass a dict: {PROMPT_FORMS}")
    unknown = sorted(set(prompt) - PROMPT_KEYS, key=str)
    if unknown:
        raise ValueError(f"{where}: unknown prompt keys {unknown}; pass {PROMPT_FORMS}")
    kinds = [kind for kind in PROMPT_KINDS if kind in prompt]
    if len(kinds) != 1:
        found = f"several prompt kinds ({', '.join(kinds)})" if kinds else "no mask, box or points"
        raise ValueError(f"{where}: the prompt has {found}; pass exactly one of {PROMPT_FORMS}")
    if "labels" in prompt and kinds[0] != "points":
        raise ValueError(f"{where}: labels only go with points; drop them from the {kinds[0]} prompt")
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
    where = f"object {index}"
    kind = _prompt_kind(where, prompt)
    if "frame" in prompt:
        frame = frame_index(prompt["frame"], num_frames, where)
    else:
        frame = frame_index(prompt_frame, num_frames, where, name="prompt_frame")

    if kind == "mask":
        return ObjectInputs(frame=frame, mask=_mask_input(where, prompt["mask"], size, image_size))
    if kind == "box":
        coords, labels = np.reshape(pixel_box(prompt["box"], size, where), (2, 2)), np.array(BOX_CORNER_LABELS)
    else:
        coords, labels = pixel_points(prompt["points"], prompt.get("labels"), size, where)
    # Pixel (x, y) -> model input pixels, as Sam2VideoProcessor._normalize_coordinates.
    scale = np.array([image_size / size[1], image_size / size[0]])
    return ObjectInputs(
        frame=frame,
        point_coords=torch.tensor(coords * scale, dtype=torch.float32)[None, None],
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
