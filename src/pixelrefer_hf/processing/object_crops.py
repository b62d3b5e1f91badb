"""SAOT, data side: crop each object with a margin, rescale the crop to its object's size, mask on the patch grid.

Small objects are enlarged so that their mask covers at least `max_tokens` patch cells; huge objects are shrunk so
that they cover about `max_object_patches` cells. The crop is resized with OpenCV exactly as the original release
does (its rounding is what the checkpoints were trained on). The full model and Lite were trained with slightly
different crops (`crop_object` and `crop_object_lite`); Lite also sees two context views of the source image
(`context_views`).
"""

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class ObjectCrop:
    """One region, ready for the vision encoder.

    image: `(h * patch, w * patch, 3)` uint8 crop, scale-adapted.
    mask: `(h, w)` the object's mask on the crop's patch grid (uint8 {0, 1} for the full model, float in [0, 1] for
        Lite).
    num_tokens: object tokens this region becomes (`<REGION>` placeholders in the prompt).
    box: (x0, y0, x1, y1) of the crop in the source image, inclusive pixels.
    image_size: (height, width) of the source image.
    scale: factor the crop was resized by.
    """

    image: np.ndarray
    mask: np.ndarray
    num_tokens: int
    box: tuple[int, int, int, int]
    image_size: tuple[int, int]
    scale: float


def scale_factor(mask_area: int, max_tokens: int, patch_size: int, max_object_patches: int) -> float:
    """Resize factor of a crop: enlarge until the mask covers `max_tokens` cells, shrink above `max_object_patches`."""
    cell = patch_size * patch_size
    scale = math.ceil(math.sqrt(cell * max_tokens / mask_area))
    if scale == 1 and mask_area / cell > max_object_patches:
        scale = 1 / math.sqrt(mask_area / cell / max_object_patches)
    return scale


def crop_object(
    image: np.ndarray,
    mask: np.ndarray,
    max_tokens: int = 32,
    patch_size: int = 14,
    margin_patches: int = 2,
    max_object_patches: int = 100,
) -> ObjectCrop:
    """Scale-adaptive crop of one object (full PixelRefer).

    Args:
        image: `(H, W, 3)` uint8 RGB.
        mask: `(H, W)` uint8 {0, 1}, at least one pixel set.
        max_tokens: the model's `mask_num`.
    """
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    margin = patch_size * margin_patches
    top, left = max(0, int(rows.min()) - margin), max(0, int(cols.min()) - margin)
    bottom, right = min(height - 1, int(rows.max()) + margin), min(width - 1, int(cols.max()) + margin)
    if bottom <= top or right <= left:
        raise ValueError(
            f"Cannot crop a region from a {height}x{width} image: the crop box would be empty. "
            "Pass an image of at least 2x2 pixels."
        )
    scale = scale_factor(int(mask.sum()), max_tokens, patch_size, max_object_patches)
    # The original crops with an exclusive bottom/right edge while its box is inclusive; kept for parity.
    crop_h, crop_w = bottom - top, right - left
    out_h = math.ceil(crop_h * scale / patch_size) * patch_size
    out_w = math.ceil(crop_w * scale / patch_size) * patch_size
    crop = cv2.resize(np.ascontiguousarray(image[top:bottom, left:right]), (out_w, out_h))
    mask_crop = torch.from_numpy(np.ascontiguousarray(mask[top:bottom, left:right], dtype=np.uint8))
    grid_mask = F.interpolate(
        mask_crop[None, None], size=(out_h // patch_size, out_w // patch_size), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    return ObjectCrop(
        image=crop,
        mask=grid_mask,
        num_tokens=min(max_tokens, int(grid_mask.sum())),
        box=(left, top, right, bottom),
        image_size=(height, width),
        scale=float(scale),
    )


def crop_object_lite(
    image: np.ndarray,
    mask: np.ndarray,
    max_tokens: int = 32,
    patch_size: int = 14,
    margin_patches: int = 2,
    max_object_patches: int = 50,
) -> ObjectCrop:
    """Scale-adaptive crop of one object (PixelRefer-Lite).

    Differs from `crop_object` as the Lite release does: the crop includes the box's bottom row and right column,
    shrinking starts above 50 patches, the crop is resized with `INTER_AREA` when it shrinks on both sides, the mask
    is resized to the patch grid as floats (fractional cells count as object), and every region becomes exactly
    `max_tokens` tokens (zero padded).
    """
    height, width = mask.shape
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    x, y, box_w, box_h = cv2.boundingRect(cv2.findNonZero(mask))
    margin = patch_size * margin_patches
    top, left = max(0, y - margin), max(0, x - margin)
    bottom, right = min(height, y + box_h + margin), min(width, x + box_w + margin)
    crop_h, crop_w = bottom - top, right - left
    scale = scale_factor(int(mask.sum(dtype=np.int64)), max_tokens, patch_size, max_object_patches)
    out_h = math.ceil(crop_h * scale / patch_size) * patch_size
    out_w = math.ceil(crop_w * scale / patch_size) * patch_size
    interpolation = cv2.INTER_LINEAR if (out_h >= crop_h or out_w >= crop_w) else cv2.INTER_AREA
    crop = cv2.resize(np.ascontiguousarray(image[top:bottom, left:right]), (out_w, out_h), interpolation=interpolation)
    grid_mask = cv2.resize(
        mask[top:bottom, left:right].astype(np.float32),
        (out_w // patch_size, out_h // patch_size),
        interpolation=cv2.INTER_LINEAR,
    )
    return ObjectCrop(
        image=crop,
        mask=grid_mask,
        num_tokens=max_tokens,
        box=(left, top, right - 1, bottom - 1),
        image_size=(height, width),
        scale=float(scale),
    )


def context_views(
    image: np.ndarray, box: tuple[int, int, int, int], global_size: int = 336, local_size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Lite's context of an object: the whole image squashed to `global_size`, and the object's crop (inclusive
    `box`, before scale adaptation) squashed to `local_size`, both with `INTER_AREA`."""
    x0, y0, x1, y1 = box
    whole = cv2.resize(image, (global_size, global_size), interpolation=cv2.INTER_AREA)
    local = cv2.resize(
        np.ascontiguousarray(image[y0 : y1 + 1, x0 : x1 + 1]), (local_size, local_size), interpolation=cv2.INTER_AREA
    )
    return whole, local


def position_boxes(crops: list[ObjectCrop]) -> torch.Tensor:
    """`(R, 4)` float32 boxes of the crops as the box position embedding was trained to read them.

    The original passes its crop box as (top, left, bottom, right) to a function that reads it as (x0, y0, x1, y1)
    and normalises by (width - 1, height - 1). So the first position channel, which runs over a crop's columns,
    goes from top / (W - 1) to bottom / (W - 1), and the second, over its rows, from left / (H - 1) to right / (H - 1).
    The trained embedding expects exactly that, so it is reproduced here.
    """
    x0, y0, x1, y1 = torch.tensor([crop.box for crop in crops], dtype=torch.float32).unbind(-1)
    height, width = (torch.tensor([crop.image_size for crop in crops], dtype=torch.float32) - 1).unbind(-1)
    return torch.stack([y0 / width, x0 / height, y1 / width, x1 / height], dim=-1)


__all__ = ["ObjectCrop", "context_views", "crop_object", "crop_object_lite", "position_boxes", "scale_factor"]
