import re

import numpy as np
import pytest
import torch
from PIL import Image

from pixelrefer_hf.processing.regions import region_to_mask
from pixelrefer_hf.processing.validation import (
    as_rgb_array,
    binary_mask,
    frame_index,
    frame_indices,
    height_width,
    pixel_box,
    pixel_points,
    require_foreground,
)
from pixelrefer_hf.segmentation.prompts import prompts_to_inputs


HEIGHT, WIDTH = 8, 10
IMAGE_SIZE = (HEIGHT, WIDTH)
WHERE = "object 3"


def random_mask(size: tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(size) > 0.5).astype(np.uint8)


def assert_mask_equal(mask: np.ndarray, expected: np.ndarray) -> None:
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)


# height_width


def test_height_width_accepts_positive_integers():
    assert height_width([np.int64(8), 10], WHERE) == (8, 10)


@pytest.mark.parametrize("image_size", [(0, 10), (8,), (8.0, 10), "8x10", (True, 10)])
def test_height_width_refuses_anything_else(image_size):
    with pytest.raises(ValueError, match=r"^object 3: image_size .* is invalid; pass \(height, width\)"):
        height_width(image_size, WHERE)


# binary_mask

MASK_FORMS = {
    "bool": lambda m: m.astype(bool),
    "uint8-01": lambda m: m,
    "uint8-0-255": lambda m: m * 255,
    "int64": lambda m: m.astype(np.int64),
    "float32-01": lambda m: m.astype(np.float32),
    "leading-singleton": lambda m: m[None],
    "torch-uint8": torch.from_numpy,
    "torch-bool": lambda m: torch.from_numpy(m).bool(),
    "torch-bfloat16": lambda m: torch.from_numpy(m).to(torch.bfloat16),
    "pil-1": lambda m: Image.fromarray(m.astype(bool)),
    "pil-L": lambda m: Image.fromarray(m * 255),
    "pil-P": lambda m: Image.fromarray(m).convert("P"),
    "pil-RGB-black-and-white": lambda m: Image.fromarray(m * 255).convert("RGB"),
}


@pytest.mark.parametrize("convert", MASK_FORMS.values(), ids=MASK_FORMS.keys())
def test_binary_mask_accepted_forms(convert):
    expected = random_mask()
    assert_mask_equal(binary_mask(convert(expected), IMAGE_SIZE, WHERE), expected)


def test_binary_mask_without_image_size_skips_the_shape_check():
    assert binary_mask(np.ones((3, 4), bool), None, WHERE).shape == (3, 4)


def test_binary_mask_allow_empty():
    assert_mask_equal(binary_mask(np.zeros(IMAGE_SIZE), IMAGE_SIZE, WHERE, allow_empty=True), np.zeros(IMAGE_SIZE))


BAD_MASKS = {
    "empty": (np.zeros(IMAGE_SIZE, np.uint8), ValueError, r"mask is empty \(no pixel set\); pass a mask with"),
    "wrong-size": (np.ones((WIDTH, HEIGHT), bool), ValueError, r"shape \(10, 8\) .* \(8, 10\); pass a mask of shape"),
    "3d": (np.ones((2, HEIGHT, WIDTH)), ValueError, r"shape \(2, 8, 10\); pass a mask of shape \(H, W\)"),
    "1d": (np.ones(HEIGHT * WIDTH), ValueError, r"shape \(80,\); pass a mask of shape \(H, W\)"),
    "uint8-7": (np.full(IMAGE_SIZE, 7, np.uint8), ValueError, r"not binary \(.*\[7\]\); pass a mask of bool"),
    "float-0.5": (np.full(IMAGE_SIZE, 0.5), ValueError, r"not binary.*mask > 0\.5"),
    "float-0-255": (random_mask().astype(np.float32) * 255, ValueError, r"not binary"),
    "nan": (np.full(IMAGE_SIZE, np.nan), ValueError, r"not binary"),
    "torch-2": (torch.full(IMAGE_SIZE, 2), ValueError, r"not binary"),
    "colored-rgb": (Image.new("RGB", (WIDTH, HEIGHT), (255, 0, 0)), ValueError, r"channels differ.*black-and-white"),
    "pil-RGBA": (Image.new("RGBA", (WIDTH, HEIGHT)), TypeError, r"mode 'RGBA' .*; pass a mask of mode 1, L, P, RGB"),
    "strings": (np.full(IMAGE_SIZE, "1"), TypeError, r"dtype <U1; pass a mask of bool, integer or float dtype"),
    "list": ([[0, 1], [1, 0]], TypeError, r"mask of type list is not supported; pass a numpy array"),
    "none": (None, TypeError, r"mask of type NoneType"),
}


@pytest.mark.parametrize("mask, error, pattern", BAD_MASKS.values(), ids=BAD_MASKS.keys())
def test_binary_mask_refused_forms(mask, error, pattern):
    with pytest.raises(error, match=r"^object 3: .*" + pattern):
        binary_mask(mask, IMAGE_SIZE, WHERE)


def test_require_foreground_names_the_form():
    mask = np.ones(IMAGE_SIZE, np.uint8)
    assert require_foreground(mask, WHERE) is mask
    with pytest.raises(ValueError, match=r"^object 3: RLE is empty \(no pixel set\)"):
        require_foreground(np.zeros(IMAGE_SIZE), WHERE, "RLE")


# pixel_box


@pytest.mark.parametrize(
    "box", [[2, 3, 5, 7], (2, 3, 5, 7), np.array([2, 3, 5, 7]), torch.tensor([2.0, 3.0, 5.0, 7.0]), [2.0, 3, 5, 7.0]]
)
def test_pixel_box_accepted_forms(box):
    assert pixel_box(box, IMAGE_SIZE, WHERE) == (2.0, 3.0, 5.0, 7.0)
    assert all(isinstance(value, float) for value in pixel_box(box, IMAGE_SIZE, WHERE))


def test_pixel_box_may_span_the_whole_image():
    assert pixel_box([0, 0, WIDTH, HEIGHT], IMAGE_SIZE, WHERE) == (0, 0, WIDTH, HEIGHT)


BAD_BOXES = {
    "x1<=x0": ([5, 3, 5, 7], ValueError, r"\[5, 3, 5, 7\] has x1 <= x0; pass \[x0, y0, x1, y1\] with x1 > x0"),
    "y1<=y0": ([2, 7, 5, 3], ValueError, r"\[2, 7, 5, 3\] has y1 <= y0"),
    "x1-outside": ([2, 3, 11, 7], ValueError, r"outside the image of size \(H, W\) = \(8, 10\); pass .*x1 <= 10"),
    "y1-outside": ([2, 3, 5, 9], ValueError, r"outside the image .*y1 <= 8"),
    "negative": ([-0.5, 3, 5, 7], ValueError, r"\[-0.5, 3, 5, 7\] lies outside"),
    "3-numbers": ([1, 2, 3], ValueError, r"\[1, 2, 3\] is malformed; pass 4 finite numbers"),
    "2x2": ([[2, 3], [5, 7]], ValueError, r"is malformed; pass 4 finite numbers"),
    "nan": ([1, 2, float("nan"), 5], ValueError, r"malformed \(a coordinate is not finite\); pass 4 finite"),
    "inf": ([1, 2, float("inf"), 5], ValueError, r"not finite"),
    "strings": (["1", "2", "3", "4"], TypeError, r"malformed \(not all numbers\); pass 4 finite numbers"),
    "bools": ([True, True, True, True], TypeError, r"not all numbers"),
    "ragged": ([[1, 2], [3]], TypeError, r"not all numbers"),
    "none": (None, TypeError, r"None is malformed"),
}


@pytest.mark.parametrize("box, error, pattern", BAD_BOXES.values(), ids=BAD_BOXES.keys())
def test_pixel_box_refused_forms(box, error, pattern):
    with pytest.raises(error, match=r"^object 3: box .*" + pattern):
        pixel_box(box, IMAGE_SIZE, WHERE)


# pixel_points


def test_pixel_points_default_labels_are_object():
    points, labels = pixel_points([[1, 2], [WIDTH, HEIGHT]], None, IMAGE_SIZE, WHERE)
    assert points.dtype == np.float64 and points.shape == (2, 2)
    np.testing.assert_array_equal(points, [[1, 2], [WIDTH, HEIGHT]])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [1, 1])


def test_pixel_points_from_tensors():
    points, labels = pixel_points(torch.tensor([[1.5, 2.0]]), torch.tensor([0]), IMAGE_SIZE, WHERE)
    np.testing.assert_array_equal(points, [[1.5, 2.0]])
    np.testing.assert_array_equal(labels, [0])


BAD_POINTS = {
    "flat": ([1, 2], None, ValueError, r"points must have shape \(N, 2\) with N >= 1, got shape \(2,\); pass"),
    "none-given": ([], None, ValueError, r"points must have shape \(N, 2\)"),
    "x-outside": ([[11, 2]], None, ValueError, r"point 0 \[11, 2\] lies outside .*\(8, 10\); pass .*0 <= x <= 10"),
    "y-negative": ([[1, 2], [1, -1]], None, ValueError, r"point 1 \[1, -1\] lies outside"),
    "nan": ([[1, float("nan")]], None, ValueError, r"points .* malformed \(a coordinate is not finite\)"),
    "strings": ([["a", 2]], None, TypeError, r"points .* malformed \(not all numbers\); pass \[\[x, y\], ...\]"),
    "labels-count": ([[1, 2]], [1, 0], ValueError, r"2 labels for 1 points; pass one label per point"),
    "labels-value": ([[1, 2]], [2], ValueError, r"labels \[2\] must be 1 \(object\) or 0 \(background\)"),
}


@pytest.mark.parametrize("points, labels, error, pattern", BAD_POINTS.values(), ids=BAD_POINTS.keys())
def test_pixel_points_refused_forms(points, labels, error, pattern):
    with pytest.raises(error, match=r"^object 3: " + pattern):
        pixel_points(points, labels, IMAGE_SIZE, WHERE)


# frame_index, frame_indices


@pytest.mark.parametrize("frame", [0, 4, np.int64(2)])
def test_frame_index_accepts_integers_in_range(frame):
    assert frame_index(frame, 5, WHERE) == frame
    assert type(frame_index(frame, 5, WHERE)) is int


@pytest.mark.parametrize(
    "frame, error, pattern",
    [
        (5, ValueError, r"frame=5 is outside the video of 5 frames; pass a frame index in 0\.\.4"),
        (-1, ValueError, r"frame=-1 is outside"),
        (1.0, TypeError, r"frame must be an int frame index, got 1\.0; pass an integer in 0\.\.4"),
        (True, TypeError, r"frame must be an int"),
        ("1", TypeError, r"frame must be an int"),
    ],
)
def test_frame_index_refused(frame, error, pattern):
    with pytest.raises(error, match=r"^object 3: " + pattern):
        frame_index(frame, 5, WHERE)


def test_frame_index_names_the_keyword():
    with pytest.raises(ValueError, match=r"^object 3: prompt_frame=7 is outside"):
        frame_index(7, 5, WHERE, name="prompt_frame")


def test_frame_indices():
    assert frame_indices([3, np.int64(0), 3], 5, WHERE) == [3, 0, 3]
    with pytest.raises(ValueError, match=r"^object 3: frames \[5, 9\] are outside the video of 5 frames; pass"):
        frame_indices([9, 1, 5, 9], 5, WHERE)
    with pytest.raises(TypeError, match=r"^object 3: frame must be an int frame index, got 0\.5"):
        frame_indices([1, 0.5], 5, WHERE)


# as_rgb_array


def rgb_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda a, _: a, id="numpy"),
        pytest.param(lambda a, _: torch.from_numpy(a), id="torch"),
        pytest.param(lambda a, _: Image.fromarray(a), id="pil-RGB"),
        pytest.param(lambda a, _: Image.fromarray(a).convert("RGBA"), id="pil-RGBA"),
        pytest.param(lambda a, path: path, id="pathlib"),
        pytest.param(lambda a, path: str(path), id="str-path"),
    ],
)
def test_as_rgb_array_accepted_forms(convert, tmp_path):
    expected = rgb_image()
    path = tmp_path / "image.png"
    Image.fromarray(expected).save(path)
    array = as_rgb_array(convert(expected, path), WHERE)
    assert array.dtype == np.uint8 and array.shape == (4, 5, 3)
    np.testing.assert_array_equal(array, expected)


def test_as_rgb_array_converts_grayscale_pil():
    assert as_rgb_array(Image.new("L", (5, 4), 7), WHERE).shape == (4, 5, 3)


@pytest.mark.parametrize(
    "image, pattern",
    [
        (rgb_image().astype(np.float32), r"image arrays must be uint8 \(H, W, 3\) RGB, got dtype float32; convert"),
        (torch.from_numpy(rgb_image()).float(), r"got dtype float32"),
        (rgb_image()[..., 0], r"unsupported image ndarray\(4, 5\); pass a PIL image, a path, or a uint8"),
        (rgb_image().transpose(2, 0, 1), r"unsupported image ndarray\(3, 4, 5\)"),
        ([[1, 2, 3]], r"unsupported image list; pass a PIL image"),
    ],
)
def test_as_rgb_array_refused_forms(image, pattern):
    with pytest.raises(TypeError, match=r"^object 3: .*" + pattern):
        as_rgb_array(image, WHERE)


# The processor's regions and SAM2's prompts give the same verdict and message for the same input

SQUARE = (8, 8)  # SAM2 mask prompts on frames of the model's input size are not resized


def processor_verdict(form: str, value, size: tuple[int, int]):
    """`region_to_mask`'s mask, or its error type and message after the "sample 0, region 1: " prefix."""
    try:
        return region_to_mask({form: value}, size, region_index=1)
    except (TypeError, ValueError) as error:
        return type(error), re.sub(r"^sample 0, region 1: ", "", str(error))


def prompt_verdict(form: str, value, size: tuple[int, int]):
    """The SAM2 prompt's inputs, or its error type and message after the "object 0: " prefix."""
    try:
        return prompts_to_inputs([{form: value}], 0, 1, size, size[0])[0]
    except (TypeError, ValueError) as error:
        return type(error), re.sub(r"^object 0: ", "", str(error))


SHARED_MASKS = {
    "uint8-0-255": lambda m: m * 255,
    "pil-L": lambda m: Image.fromarray(m * 255),
    "pil-1": lambda m: Image.fromarray(m.astype(bool)),
    "bool": lambda m: m.astype(bool),
    "float-01": lambda m: m.astype(np.float32),
    "torch": torch.from_numpy,
    "pil-RGB-black-and-white": lambda m: Image.fromarray(m * 255).convert("RGB"),
}


@pytest.mark.parametrize("convert", SHARED_MASKS.values(), ids=SHARED_MASKS.keys())
def test_both_paths_accept_the_same_masks(convert):
    expected = random_mask(SQUARE, seed=1)
    assert_mask_equal(processor_verdict("mask", convert(expected), SQUARE), expected)
    inputs = prompt_verdict("mask", convert(expected), SQUARE)
    np.testing.assert_array_equal(inputs.mask[0, 0].numpy(), expected)


SHARED_REFUSALS = {
    "empty-mask": ("mask", np.zeros(IMAGE_SIZE, np.uint8)),
    "wrong-size-mask": ("mask", np.ones((WIDTH, HEIGHT), np.uint8)),
    "non-binary-mask": ("mask", np.full(IMAGE_SIZE, 7, np.uint8)),
    "non-binary-float-mask": ("mask", np.full(IMAGE_SIZE, 0.5, np.float32)),
    "3d-mask": ("mask", np.ones((2, HEIGHT, WIDTH), np.uint8)),
    "colored-rgb-mask": ("mask", Image.new("RGB", (WIDTH, HEIGHT), (255, 0, 0))),
    "list-mask": ("mask", [[0, 1], [1, 0]]),
    "box-outside": ("box", [2, 3, 11, 7]),
    "box-negative": ("box", [-1, 3, 5, 7]),
    "box-x1<=x0": ("box", [5, 3, 4, 7]),
    "box-y1<=y0": ("box", [2, 7, 5, 7]),
    "box-3-numbers": ("box", [1, 2, 3]),
    "box-nan": ("box", [1, 2, float("nan"), 5]),
    "box-strings": ("box", ["a", 2, 3, 4]),
}


@pytest.mark.parametrize("form, value", SHARED_REFUSALS.values(), ids=SHARED_REFUSALS.keys())
def test_both_paths_refuse_with_the_same_message(form, value):
    processor = processor_verdict(form, value, IMAGE_SIZE)
    assert isinstance(processor, tuple), "the processor accepted it"
    assert prompt_verdict(form, value, IMAGE_SIZE) == processor


def test_both_paths_accept_the_same_box():
    mask = processor_verdict("box", [2, 3, 5, 7], IMAGE_SIZE)
    assert mask.sum() == 12
    inputs = prompt_verdict("box", [2, 3, 5, 7], IMAGE_SIZE)
    np.testing.assert_allclose(inputs.point_coords[0, 0].numpy(), [[2 * 0.8, 3], [5 * 0.8, 7]])
