"""Checks of user-given masks, boxes, points, frame indices and images, shared by the processor and the segmenter.

Each function takes `where`, the prefix of its error messages (`"sample 0, region 1"`, `"object 2"`, ...), raises a
`TypeError` for an input of the wrong type and a `ValueError` for a wrong value, and says in the message what was
wrong and what to pass instead, so that the same input gets the same verdict and message wherever it is given.

The resource limits below are module constants, read at every call: raise one (e.g.
`pixelrefer_hf.processing.validation.MAX_IMAGE_PIXELS = 200_000_000`) to accept larger inputs. Each is checked from
the input's header or length, before the input is decoded or its masks are drawn.

Image files and PIL images are read as a viewer displays them: their EXIF orientation is applied
(`PIL.ImageOps.exif_transpose`), whether the image is given as a path or as an opened PIL image, so that a mask drawn
on the displayed photo refers to the same pixels either way (an image already transposed has no orientation left, so
transposing it again changes nothing).
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator, Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from transformers.image_utils import load_image


MaskInput = Union[np.ndarray, torch.Tensor, Image.Image]

# Most pixels of an image or of a video frame (100 megapixels: any camera photo; a 20,000 x 20,000 image is refused).
MAX_IMAGE_PIXELS = 100_000_000
# Most regions (`<region>` placeholders, i.e. objects) of one sample; each becomes up to `max_object_tokens` tokens.
MAX_REGIONS_PER_SAMPLE = 256
# Longest video decoded (frames are decoded one after the other, so time grows with the duration).
MAX_VIDEO_SECONDS = 4 * 3600
# Most bytes of the decoded frames of one video (sampled frames and the frames regions are drawn on, RGB uint8).
MAX_DECODED_VIDEO_BYTES = 8 * 2**30

PIL_MASK_MODES = ("1", "L", "P", "RGB", "I", "I;16", "F")
EXIF_ORIENTATION = 0x0112
BOX_FORM = "4 finite numbers [x0, y0, x1, y1] in pixels"
POINTS_FORM = "[[x, y], ...] in pixels (one point is [[x, y]])"


def height_width(image_size: Any, where: str) -> tuple[int, int]:
    """An image size `(height, width)`, checked to be two positive integers."""
    if (
        not isinstance(image_size, Sequence)
        or len(image_size) != 2
        or not all(is_integer(size) and size > 0 for size in image_size)
    ):
        raise ValueError(f"{where}: image_size {image_size!r} is invalid; pass (height, width) as positive integers")
    return int(image_size[0]), int(image_size[1])


def binary_mask(
    mask: MaskInput, image_size: tuple[int, int] | None, where: str, *, allow_empty: bool = False
) -> np.ndarray:
    """A binary mask as a `(H, W)` uint8 array of 0s and 1s.

    Accepts a numpy array, torch tensor or PIL image (mode "1", "L", "P" or black-and-white "RGB") of shape `(H, W)`
    or `(1, H, W)` holding bools, 0/1 or (integers only) 0/255. Refuses a shape other than `image_size` unless it is
    None, and a mask without a set pixel unless `allow_empty`.
    """
    array = _binary_values(_mask_array(mask, where), where)
    if image_size is not None and array.shape != tuple(image_size):
        raise ValueError(
            f"{where}: mask has shape {array.shape} but the image size (H, W) is {tuple(image_size)}; "
            f"pass a mask of shape {tuple(image_size)}"
        )
    return array if allow_empty else require_foreground(array, where)


def require_foreground(mask: np.ndarray, where: str, name: str = "mask") -> np.ndarray:
    """`mask` itself, checked to have at least one pixel set; `name` says what it was made from ("box", "RLE", ...)."""
    if not mask.any():
        raise ValueError(f"{where}: {name} is empty (no pixel set); pass a mask with at least one foreground pixel")
    return mask


def pixel_box(box: Any, image_size: tuple[int, int], where: str) -> tuple[float, float, float, float]:
    """A box `[x0, y0, x1, y1]` in pixels (list, tuple, numpy array or torch tensor) as 4 floats.

    `x1` and `y1` are exclusive, so the box must satisfy `0 <= x0 < x1 <= W` and `0 <= y0 < y1 <= H` for the
    `image_size` `(H, W)`.
    """
    coordinates = _coordinates(box, "box", BOX_FORM, where)
    if coordinates.shape != (4,):
        raise ValueError(f"{where}: box {box!r:.80} is malformed; pass {BOX_FORM}")
    x0, y0, x1, y1 = coordinates.tolist()
    height, width = image_size
    if x1 <= x0 or y1 <= y0:
        side = "x1 <= x0" if x1 <= x0 else "y1 <= y0"
        raise ValueError(
            f"{where}: box {_format_numbers(coordinates)} has {side}; pass [x0, y0, x1, y1] with x1 > x0 and y1 > y0"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"{where}: box {_format_numbers(coordinates)} lies outside the image of size (H, W) = "
            f"{tuple(image_size)}; pass [x0, y0, x1, y1] with 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} "
            "(x1 and y1 are exclusive)"
        )
    return x0, y0, x1, y1


def pixel_points(points: Any, labels: Any, image_size: tuple[int, int], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Points `[[x, y], ...]` in pixels as an `(N, 2)` float64 array, and their labels as an `(N,)` int64 array.

    A point must satisfy `0 <= x <= W` and `0 <= y <= H` for the `image_size` `(H, W)`. `labels` holds one label per
    point, 1 (object) or 0 (background); None labels every point 1.
    """
    array = _coordinates(points, "points", POINTS_FORM, where)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(
            f"{where}: points must have shape (N, 2) with N >= 1, got shape {array.shape}; pass {POINTS_FORM}"
        )
    height, width = image_size
    outside = np.flatnonzero((array[:, 0] < 0) | (array[:, 0] > width) | (array[:, 1] < 0) | (array[:, 1] > height))
    if outside.size:
        raise ValueError(
            f"{where}: point {outside[0]} {_format_numbers(array[outside[0]])} lies outside the image of size (H, W) "
            f"= {tuple(image_size)}; pass pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    return array, _point_labels(labels, len(array), where)


def frame_index(frame: Any, num_frames: int, where: str, name: str = "frame") -> int:
    """A frame index of a video of `num_frames` frames, checked to be an integer in `0..num_frames - 1`; `name` is
    what the user called it (e.g. the keyword it was given as)."""
    _require_integer_frame(frame, num_frames, where, name)
    if not 0 <= frame < num_frames:
        raise ValueError(
            f"{where}: {name}={frame} is outside the video of {num_frames} frames; "
            f"pass a frame index in 0..{num_frames - 1}"
        )
    return int(frame)


def frame_indices(frames: Sequence[Any], num_frames: int, where: str) -> list[int]:
    """Frame indices of a video of `num_frames` frames, each checked to be an integer in `0..num_frames - 1`."""
    for frame in frames:
        _require_integer_frame(frame, num_frames, where, "frame")
    outside = sorted({int(frame) for frame in frames if not 0 <= frame < num_frames})
    if outside:
        raise ValueError(
            f"{where}: frames {outside} are outside the video of {num_frames} frames; "
            f"pass frame indices in 0..{num_frames - 1}"
        )
    return [int(frame) for frame in frames]


def region_count(num_regions: int, where: str) -> int:
    """`num_regions`, checked not to exceed `MAX_REGIONS_PER_SAMPLE` (before any mask is drawn)."""
    if num_regions > MAX_REGIONS_PER_SAMPLE:
        raise ValueError(
            f"{where}: {num_regions} regions in one sample, more than MAX_REGIONS_PER_SAMPLE = "
            f"{MAX_REGIONS_PER_SAMPLE}; split the regions over several samples (or raise "
            "pixelrefer_hf.processing.validation.MAX_REGIONS_PER_SAMPLE)"
        )
    return num_regions


def image_index(index: Any, num_images: int, where: str) -> int:
    """The index of the image a region is on, checked to be an integer in `0..num_images - 1`."""
    if not is_integer(index):
        raise TypeError(
            f"{where}: image_index must be an int, got {index!r:.40}; pass an index in 0..{num_images - 1}"
        )
    if not 0 <= index < num_images:
        raise ValueError(
            f"{where}: image_index {index} but the sample has {num_images} image(s); "
            f"pass an index in 0..{num_images - 1}"
        )
    return int(index)


def image_pixels(height: int, width: int, where: str) -> None:
    """Refuses an image (or video frame) of more than `MAX_IMAGE_PIXELS` pixels."""
    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{where} has {width} x {height} = {height * width:,} pixels, more than MAX_IMAGE_PIXELS = "
            f"{MAX_IMAGE_PIXELS:,}; pass a downscaled image (or raise "
            "pixelrefer_hf.processing.validation.MAX_IMAGE_PIXELS)"
        )


def image_file_size(path: str | os.PathLike, where: str) -> tuple[int, int]:
    """`(H, W)` of an image file as it is displayed (after its EXIF orientation), read from its header only.

    Raises a `ValueError` naming the file when it cannot be identified as an image or has more than
    `MAX_IMAGE_PIXELS` pixels.
    """
    with _opened_image_file(path, where) as image:
        width, height = image.size
        # A PNG's EXIF may follow its pixel data, which `getexif` would then decode: read it only from the header.
        has_header_exif = image.format != "PNG" or "exif" in image.info
        try:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1) if has_header_exif else 1
        except Exception as error:  # a malformed EXIF block
            raise ValueError(
                f"{where}: image {os.fspath(path)!r} has unreadable EXIF data ({type(error).__name__}: {error}); "
                "replace the file"
            ) from None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)  # a quarter turn or a transpose


def load_image_file(path: str | os.PathLike, where: str) -> np.ndarray:
    """An image file as an `(H, W, 3)` uint8 RGB array, as it is displayed (EXIF orientation applied).

    Raises a `ValueError` naming the file when it is missing, not an image, truncated or corrupt, or has more than
    `MAX_IMAGE_PIXELS` pixels (checked from its header, before it is decoded).
    """
    with _opened_image_file(path, where) as image:
        return _decoded_rgb(image, f"{where}: image {os.fspath(path)!r}")


def as_rgb_array(image: Any, where: str) -> np.ndarray:
    """A PIL image, `(H, W, 3)` uint8 numpy array or torch tensor, path or URL as an `(H, W, 3)` uint8 RGB array.

    Paths and PIL images are read with their EXIF orientation applied (see the module docstring). An image of more
    than `MAX_IMAGE_PIXELS` pixels, an unreadable file and a truncated or corrupt image raise a `ValueError`.
    """
    if isinstance(image, os.PathLike) or (isinstance(image, str) and os.path.isfile(image)):
        return load_image_file(image, where)
    if isinstance(image, str):
        try:
            image = load_image(image)  # a URL or base64 data
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if isinstance(image, Image.Image):
        name = f"{where}: image" + (f" {image.filename!r}" if getattr(image, "filename", "") else "")
        image_pixels(image.height, image.width, name)
        return _decoded_rgb(image, name)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
        if image.dtype != np.uint8:
            raise TypeError(
                f"{where}: image arrays must be uint8 (H, W, 3) RGB, got dtype {image.dtype}; "
                "convert with `np.asarray(img, dtype=np.uint8)` or pass a PIL image."
            )
        image_pixels(image.shape[0], image.shape[1], f"{where}: image")
        return image
    raise TypeError(
        f"{where}: unsupported image {type(image).__name__}{getattr(image, 'shape', '')}; "
        "pass a PIL image, a path, or a uint8 (H, W, 3) RGB array."
    )


@contextlib.contextmanager
def _opened_image_file(path: str | os.PathLike, where: str) -> Iterator[Image.Image]:
    """A lazily opened PIL image (header read, pixels not decoded yet), checked against `MAX_IMAGE_PIXELS`; any
    failure to open it is a `ValueError` naming the file."""
    name = f"{where}: image {os.fspath(path)!r}"
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{name} is refused as a decompression bomb ({error}); pass a downscaled image") from None
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist; check the path") from None
    except Exception as error:  # PIL raises many types on malformed headers (OSError, SyntaxError, ...)
        raise ValueError(
            f"{name} cannot be read as an image ({type(error).__name__}: {error}); replace the file"
        ) from None
    with image:
        image_pixels(image.height, image.width, name)
        yield image


def _decoded_rgb(image: Image.Image, name: str) -> np.ndarray:
    """The pixels of a PIL image, EXIF orientation applied, as `(H, W, 3)` uint8 RGB; a decoding failure (truncated
    or corrupt data) is a `ValueError` naming the image."""
    allow_truncated = ImageFile.LOAD_TRUNCATED_IMAGES  # some libraries (lmms-eval) set it for the whole process
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return np.asarray(image.convert("RGB"))
    except Exception as error:  # PIL's decoders raise OSError, SyntaxError, struct.error, ... on corrupt data
        raise ValueError(
            f"{name} is truncated or corrupt ({type(error).__name__}: {error}); replace the file"
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = allow_truncated


def _mask_array(mask: MaskInput, where: str) -> np.ndarray:
    """A mask as a 2-D numpy array of any dtype."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu()
        array = (mask.float() if mask.dtype == torch.bfloat16 else mask).numpy()
    elif isinstance(mask, Image.Image):
        array = _pil_mask_array(mask, where)
    elif isinstance(mask, np.ndarray):
        array = mask
    else:
        raise TypeError(
            f"{where}: mask of type {type(mask).__name__} is not supported; "
            "pass a numpy array, torch tensor or PIL image of shape (H, W)"
        )
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{where}: mask has shape {array.shape}; pass a mask of shape (H, W) or (1, H, W)")
    return array


def _pil_mask_array(mask: Image.Image, where: str) -> np.ndarray:
    if mask.mode not in PIL_MASK_MODES:
        raise TypeError(
            f"{where}: PIL mask of mode {mask.mode!r} is not supported; pass a mask of mode "
            f"{', '.join(PIL_MASK_MODES)} (e.g. `image.convert('L')`)"
        )
    array = np.asarray(mask)
    if mask.mode != "RGB":
        return array
    if not (array == array[..., :1]).all():
        raise ValueError(
            f"{where}: RGB mask is not binary (its channels differ, so it is not black and white); "
            "pass a black-and-white mask or a single-channel mask"
        )
    return array[..., 0]


def _binary_values(array: np.ndarray, where: str) -> np.ndarray:
    """A 2-D array as uint8 {0, 1}, refusing anything but bools, 0/1 and (integers only) 0/255."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{where}: mask has dtype {array.dtype}; pass a mask of bool, integer or float dtype")
    is_zero_one = (array == 0) | (array == 1)
    if is_zero_one.all() or (np.issubdtype(array.dtype, np.integer) and ((array == 0) | (array == 255)).all()):
        return (array != 0).astype(np.uint8)
    bad_values = np.unique(array[~is_zero_one])[:5].tolist()
    raise ValueError(
        f"{where}: mask is not binary (it holds values such as {bad_values}); pass a mask of bool, of 0/1 or of "
        "0/255 uint8 (threshold it yourself, e.g. `mask > 0.5`)"
    )


def _coordinates(value: Any, name: str, form: str, where: str) -> np.ndarray:
    """Pixel coordinates (a list, tuple, numpy array or torch tensor of numbers) as a finite float64 array."""
    try:
        array = np.asarray(value.tolist() if isinstance(value, torch.Tensor) else value)
    except ValueError:  # nested lists of different lengths
        array = None
    if array is None or array.dtype.kind not in "iuf":
        raise TypeError(f"{where}: {name} {value!r:.80} is malformed (not all numbers); pass {form}")
    if not np.isfinite(array).all():
        raise ValueError(
            f"{where}: {name} {_format_numbers(array.ravel())} is malformed (a coordinate is not finite); pass {form}"
        )
    return array.astype(np.float64)


def _point_labels(labels: Any, num_points: int, where: str) -> np.ndarray:
    if labels is None:
        return np.ones(num_points, dtype=np.int64)
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or len(label_array) != num_points:
        raise ValueError(
            f"{where}: {label_array.size} labels for {num_points} points; "
            "pass one label per point (1 = object, 0 = background) or leave labels out"
        )
    if not np.isin(label_array, (0, 1)).all():
        raise ValueError(f"{where}: labels {label_array.tolist()} must be 1 (object) or 0 (background)")
    return label_array.astype(np.int64)


def _require_integer_frame(frame: Any, num_frames: int, where: str, name: str) -> None:
    if not is_integer(frame):
        raise TypeError(
            f"{where}: {name} must be an int frame index, got {frame!r}; pass an integer in 0..{num_frames - 1}"
        )


def is_integer(value: Any) -> bool:
    """Whether `value` is an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _format_numbers(values: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{value:g}" for value in values) + "]"
