"""Turn every form a user can give a region in into a validated binary mask.

A region is what a `<region>` placeholder of the prompt refers to. Users may give it as a binary mask (numpy array,
torch tensor or PIL image), or as a dict holding a mask, a box, a COCO RLE or a COCO polygon. `region_to_mask` turns
any of them into a `np.uint8` mask with values in {0, 1} and the shape `(height, width)` of the image, and raises an
error naming the sample, the region, what is wrong and what to pass instead for anything else.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from .validation import MaskInput, binary_mask, height_width, is_integer, pixel_box, require_foreground


RegionInput = Union[np.ndarray, torch.Tensor, Image.Image, dict, Sequence]

REGION_KEYS = ("mask", "box", "rle", "polygon", "points")
ACCEPTED_FORMS = (
    "a binary mask (numpy array, torch tensor or PIL image of shape (H, W)), "
    '{"mask": <binary mask>}, {"box": [x0, y0, x1, y1]}, {"rle": {"size": [H, W], "counts": ...}} or '
    '{"polygon": [x0, y0, x1, y1, x2, y2, ...]} (a dict may also carry "type": "region")'
)
FORM_NAMES = {"mask": "mask", "box": "box", "rle": "RLE", "polygon": "polygon", "points": "points"}
# Characters of a compressed COCO RLE string: each encodes 6 bits as chr(48 + value).
RLE_CHAR_OFFSET = 48
RLE_CHAR_RANGE = 64


def region_to_mask(
    region: RegionInput,
    image_size: tuple[int, int],
    *,
    sample_index: int = 0,
    region_index: int = 0,
) -> np.ndarray:
    """Convert one region to a binary mask.

    Args:
        region: a binary mask, or a dict with exactly one of the keys "mask", "box", "rle", "polygon" (see the
            module docstring and `ACCEPTED_FORMS`).
        image_size: `(height, width)` of the image the region lies on.
        sample_index: index of the sample in the batch, for error messages.
        region_index: index of the region in the sample, for error messages.

    Returns:
        `np.ndarray` of dtype uint8, values in {0, 1}, shape `(height, width)`, with at least one pixel set.
    """
    where = f"sample {sample_index}, region {region_index}"
    image_size = height_width(image_size, where)
    form, value = _split_region(region, where)
    return require_foreground(_CONVERTERS[form](value, image_size, where), where, FORM_NAMES[form])


def regions_to_masks(
    regions: Sequence[RegionInput], image_size: tuple[int, int], *, sample_index: int = 0
) -> list[np.ndarray]:
    """Convert the regions of one sample (one per `<region>` placeholder, in order) to binary masks."""
    if isinstance(regions, (str, bytes)) or not isinstance(regions, Sequence):
        raise TypeError(
            f"sample {sample_index}: regions must be a list with one region per <region> placeholder, "
            f"got {type(regions).__name__}; pass a list of regions, each one of: {ACCEPTED_FORMS}"
        )
    return [
        region_to_mask(region, image_size, sample_index=sample_index, region_index=region_index)
        for region_index, region in enumerate(regions)
    ]


def mask_to_rle(mask: MaskInput) -> dict[str, Any]:
    """Encode a binary mask of shape (H, W) as a compressed COCO RLE `{"size": [H, W], "counts": str}`."""
    mask = binary_mask(mask, None, "mask_to_rle", allow_empty=True)
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _split_region(region: RegionInput, where: str) -> tuple[str, Any]:
    """Return the form of `region` (one of `REGION_KEYS`) and the value that describes it."""
    if isinstance(region, (np.ndarray, torch.Tensor, Image.Image)):
        return "mask", region
    if isinstance(region, Mapping):
        return _split_region_dict(region, where)
    if isinstance(region, (list, tuple)) and len(region) == 4 and all(_is_real(value) for value in region):
        raise TypeError(
            f"{where}: a bare list of 4 numbers {_format_numbers(region)} is ambiguous; "
            f'pass a box as {{"box": [x0, y0, x1, y1]}}'
        )
    raise TypeError(f"{where}: unsupported region of type {type(region).__name__}; pass one of: {ACCEPTED_FORMS}")


def _split_region_dict(region: Mapping, where: str) -> tuple[str, Any]:
    if region.get("type", "region") != "region":
        raise TypeError(
            f"{where}: a dict of type {region['type']!r} is not a region; pass a region dict with "
            f'"type": "region" (or without "type"), one of: {ACCEPTED_FORMS}'
        )
    keys = [key for key in region if key != "type"]
    unknown = [key for key in keys if key not in REGION_KEYS]
    if unknown:
        raise TypeError(f"{where}: unknown region key(s) {unknown}; pass one of: {ACCEPTED_FORMS}")
    if len(keys) != 1:
        raise TypeError(
            f"{where}: a region dict needs exactly one of the keys {list(REGION_KEYS)}, got {keys}; "
            f"pass one of: {ACCEPTED_FORMS}"
        )
    return keys[0], region[keys[0]]


def _mask_from_box(box: Any, image_size: tuple[int, int], where: str) -> np.ndarray:
    x0, y0, x1, y1 = pixel_box(box, image_size, where)
    mask = np.zeros(image_size, dtype=np.uint8)
    mask[math.floor(y0) : math.ceil(y1), math.floor(x0) : math.ceil(x1)] = 1
    return mask


def _mask_from_rle(rle: Any, image_size: tuple[int, int], where: str) -> np.ndarray:
    expected = (
        "pass a COCO RLE {'size': [H, W], 'counts': ...} such as `mask_to_rle` or `pycocotools.mask.encode` give"
    )
    if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
        raise ValueError(f"{where}: RLE {rle!r:.80} is malformed (it needs 'size' and 'counts'); {expected}")
    size = rle["size"]
    if not isinstance(size, (list, tuple, np.ndarray)) or len(size) != 2 or tuple(size) != image_size:
        raise ValueError(
            f"{where}: RLE size {size!r} does not match the image size (H, W) = {image_size}; "
            f"pass an RLE of size {list(image_size)}"
        )
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        compressed = _check_compressed_counts(counts, image_size, where)
    else:
        compressed = _compress_counts(counts, image_size, where)
    try:
        return np.ascontiguousarray(mask_utils.decode(compressed))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: RLE could not be decoded ({error}); {expected}") from error


def _check_compressed_counts(counts: str | bytes, image_size: tuple[int, int], where: str) -> dict[str, Any]:
    """Validate a compressed RLE string before pycocotools decodes it (pycocotools does not check the length)."""
    try:
        encoded = counts.encode("ascii") if isinstance(counts, str) else counts
        runs = _decode_rle_string(encoded)
    except ValueError as error:  # UnicodeEncodeError is a ValueError
        raise ValueError(
            f"{where}: RLE counts {counts!r:.40} are not a valid compressed COCO RLE string ({error}); "
            "pass counts as given by `mask_to_rle` or `pycocotools.mask.encode`"
        ) from error
    _check_runs(runs, image_size, where)
    return {"size": list(image_size), "counts": encoded}


def _decode_rle_string(encoded: bytes) -> list[int]:
    """Decode the run lengths of a compressed COCO RLE string (same algorithm as pycocotools' `rleFrString`)."""
    runs: list[int] = []
    position = 0
    while position < len(encoded):
        value, shift, more = 0, 0, True
        while more:
            if position == len(encoded):
                raise ValueError("the string ends in the middle of a run length")
            chunk = encoded[position] - RLE_CHAR_OFFSET
            if not 0 <= chunk < RLE_CHAR_RANGE:
                raise ValueError(f"invalid character {chr(encoded[position])!r}")
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def _compress_counts(counts: Any, image_size: tuple[int, int], where: str) -> dict[str, Any]:
    runs = counts.tolist() if isinstance(counts, np.ndarray) else counts
    if not isinstance(runs, (list, tuple)) or not all(is_integer(run) for run in runs):
        raise ValueError(
            f"{where}: RLE counts {counts!r:.40} are malformed; pass a compressed string or a list of "
            "non-negative integers (uncompressed COCO RLE)"
        )
    runs = [int(run) for run in runs]
    _check_runs(runs, image_size, where)
    return mask_utils.frPyObjects({"size": list(image_size), "counts": runs}, *image_size)


def _check_runs(runs: list[int], image_size: tuple[int, int], where: str) -> None:
    if any(run < 0 for run in runs):
        raise ValueError(f"{where}: RLE counts hold a negative run length; pass non-negative run lengths")
    height, width = image_size
    if sum(runs) != height * width:
        raise ValueError(
            f"{where}: RLE counts sum to {sum(runs)} but the image has H*W = {height * width} pixels; "
            f"pass counts that sum to {height * width}"
        )


def _mask_from_polygon(polygon: Any, image_size: tuple[int, int], where: str) -> np.ndarray:
    parts = [_check_polygon_part(part, image_size, where) for part in _polygon_parts(polygon, where)]
    height, width = image_size
    mask = np.ascontiguousarray(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, height, width))))
    if not mask.any():
        raise ValueError(
            f"{where}: polygon covers no pixel (it lies entirely outside the image of size (H, W) = {image_size} "
            "or has no area); pass a polygon with points inside the image"
        )
    return mask


def _polygon_parts(polygon: Any, where: str) -> list[list]:
    """Split a polygon into its parts, each a flat list `[x0, y0, x1, y1, ...]`."""
    polygon = _as_list(polygon)
    single_part = _flat_part(polygon)
    if single_part is not None:
        return [single_part]
    if isinstance(polygon, list) and polygon:
        parts = [_flat_part(part) for part in polygon]
        if all(part is not None for part in parts):
            return parts
    raise ValueError(
        f"{where}: polygon {polygon!r:.80} is malformed; pass a flat list [x0, y0, x1, y1, ...], a list of such "
        "lists (one per part) or a list of [x, y] points"
    )


def _flat_part(part: Any) -> list | None:
    """Return `part` as a flat list of coordinates if it is one or a list of [x, y] points, else None."""
    part = _as_list(part)
    if not isinstance(part, list) or not part:
        return None
    if all(_is_real(value) for value in part):
        return part
    points = [_as_list(point) for point in part]
    if all(isinstance(point, list) and len(point) == 2 and all(map(_is_real, point)) for point in points):
        return [coordinate for point in points for coordinate in point]
    return None


def _check_polygon_part(part: list, image_size: tuple[int, int], where: str) -> list[float]:
    """A polygon part's coordinates, checked: finite, x, y pairs, at least 3 points, and each vertex at most one
    image size beyond the image's edges (the polygon is clipped to the image, as pycocotools draws it; the bound keeps
    its rasterisation, which allocates memory along the outline, proportional to the image)."""
    try:
        coordinates = [float(value) for value in part]
    except OverflowError:  # an integer beyond the float range
        coordinates = [math.inf]
    if not all(math.isfinite(value) for value in coordinates):
        raise ValueError(f"{where}: polygon has a coordinate that is not finite; pass finite pixel coordinates")
    if len(coordinates) % 2:
        raise ValueError(
            f"{where}: polygon has an odd number of coordinates ({len(coordinates)}); pass x, y pairs "
            "[x0, y0, x1, y1, ...]"
        )
    if len(coordinates) < 6:
        raise ValueError(
            f"{where}: polygon has only {len(coordinates) // 2} point(s); pass at least 3 points per polygon part"
        )
    height, width = image_size
    far = [
        (x, y)
        for x, y in zip(coordinates[0::2], coordinates[1::2])
        if not (-width <= x <= 2 * width and -height <= y <= 2 * height)
    ]
    if far:
        raise ValueError(
            f"{where}: polygon vertex {_format_numbers(far[0])} lies too far outside the image of size (H, W) = "
            f"{image_size}; pass vertices with {-width} <= x <= {2 * width} and {-height} <= y <= {2 * height} (the "
            "polygon is clipped to the image)"
        )
    return coordinates


def _reject_points(points: Any, image_size: tuple[int, int], where: str) -> np.ndarray:
    raise ValueError(
        f"{where}: points mark a region only when a segmenter (SAM2) turns them into a mask; convert them to a mask "
        'first with `pixelrefer_hf.segmentation`, or pass {"box": [x0, y0, x1, y1]} or {"mask": ...}'
    )


_CONVERTERS: dict[str, Callable[[Any, tuple[int, int], str], np.ndarray]] = {
    "mask": binary_mask,
    "box": _mask_from_box,
    "rle": _mask_from_rle,
    "polygon": _mask_from_polygon,
    "points": _reject_points,
}


def _as_list(value: Any) -> Any:
    """Return arrays, tensors and tuples as (nested) lists, anything else unchanged."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _format_numbers(values: Sequence) -> str:
    return "[" + ", ".join(f"{value:g}" if _is_real(value) else repr(value) for value in values) + "]"
