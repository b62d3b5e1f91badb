import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from pixelrefer_hf.processing.regions import mask_to_rle, region_to_mask, regions_to_masks


HEIGHT, WIDTH = 8, 10
IMAGE_SIZE = (HEIGHT, WIDTH)


def box_mask(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Reference mask of the pixels with x0 <= x < x1 and y0 <= y < y1."""
    mask = np.zeros(IMAGE_SIZE, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def random_mask(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(IMAGE_SIZE) > 0.5).astype(np.uint8)


def assert_mask_equal(mask: np.ndarray, expected: np.ndarray) -> None:
    assert mask.dtype == np.uint8
    assert mask.shape == expected.shape
    np.testing.assert_array_equal(mask, expected)


# Accepted forms


def test_box_covers_exclusive_integer_pixels():
    mask = region_to_mask({"box": [2, 3, 5, 7]}, IMAGE_SIZE)
    assert_mask_equal(mask, box_mask(2, 3, 5, 7))
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (3, 6, 2, 4)


def test_float_box_covers_every_touched_pixel():
    mask = region_to_mask({"box": [1.5, 2.25, 4.1, 6.0]}, IMAGE_SIZE)
    assert_mask_equal(mask, box_mask(1, 2, 5, 6))


def test_box_may_span_the_whole_image():
    assert_mask_equal(region_to_mask({"box": (0, 0, WIDTH, HEIGHT)}, IMAGE_SIZE), np.ones(IMAGE_SIZE, np.uint8))


@pytest.mark.parametrize("box", [np.array([2, 3, 5, 7]), torch.tensor([2.0, 3.0, 5.0, 7.0]), (2, 3, 5, 7)])
def test_box_as_array_tensor_or_tuple(box):
    assert_mask_equal(region_to_mask({"box": box}, IMAGE_SIZE), box_mask(2, 3, 5, 7))


def test_chat_message_form():
    mask = region_to_mask({"type": "region", "box": [2, 3, 5, 7]}, IMAGE_SIZE)
    assert_mask_equal(mask, box_mask(2, 3, 5, 7))


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda m: m, id="uint8-01"),
        pytest.param(lambda m: m * 255, id="uint8-0-255"),
        pytest.param(lambda m: m.astype(bool), id="bool"),
        pytest.param(lambda m: m.astype(np.float32), id="float32"),
        pytest.param(lambda m: m.astype(np.int64), id="int64"),
        pytest.param(lambda m: m[None], id="leading-singleton"),
        pytest.param(torch.from_numpy, id="torch-uint8"),
        pytest.param(lambda m: torch.from_numpy(m).bool(), id="torch-bool"),
        pytest.param(lambda m: torch.from_numpy(m).to(torch.bfloat16), id="torch-bfloat16"),
        pytest.param(lambda m: Image.fromarray(m.astype(bool)), id="pil-1"),
        pytest.param(lambda m: Image.fromarray(m * 255), id="pil-L"),
        pytest.param(lambda m: Image.fromarray(m).convert("P"), id="pil-P"),
        pytest.param(lambda m: Image.fromarray(m * 255).convert("RGB"), id="pil-RGB"),
    ],
)
def test_binary_mask_forms(convert):
    expected = random_mask(0)
    assert_mask_equal(region_to_mask(convert(expected), IMAGE_SIZE), expected)
    assert_mask_equal(region_to_mask({"mask": convert(expected)}, IMAGE_SIZE), expected)


def test_rle_round_trip():
    expected = random_mask(1)
    rle = mask_to_rle(expected)
    assert isinstance(rle["counts"], str)
    assert rle["size"] == [HEIGHT, WIDTH]
    assert_mask_equal(region_to_mask({"rle": rle}, IMAGE_SIZE), expected)


@pytest.mark.parametrize("seed", range(5))
def test_rle_from_pycocotools_with_bytes_counts(seed):
    expected = (np.random.default_rng(seed).random((37, 53)) > 0.3).astype(np.uint8)
    rle = mask_utils.encode(np.asfortranarray(expected))
    assert isinstance(rle["counts"], bytes)
    assert_mask_equal(region_to_mask({"rle": rle}, expected.shape), expected)


def test_large_rle_round_trip():
    expected = np.zeros((300, 400), dtype=np.uint8)
    expected[100:250, 17:391] = 1
    assert_mask_equal(region_to_mask({"rle": mask_to_rle(expected)}, expected.shape), expected)


def test_uncompressed_rle():
    # COCO RLE runs go down the columns (Fortran order), starting with a run of zeros.
    rle = {"size": [HEIGHT, WIDTH], "counts": [2 * HEIGHT + 3, 4, 4, 4, 4, 4, HEIGHT * WIDTH - 2 * HEIGHT - 23]}
    assert_mask_equal(region_to_mask({"rle": rle}, IMAGE_SIZE), box_mask(2, 3, 5, 7))


RECTANGLE = [2, 3, 5, 3, 5, 7, 2, 7]


def test_polygon_of_a_rectangle():
    mask = region_to_mask({"polygon": RECTANGLE}, IMAGE_SIZE)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([RECTANGLE], HEIGHT, WIDTH)))
    assert_mask_equal(mask, expected)
    assert_mask_equal(mask, box_mask(2, 3, 5, 7))


@pytest.mark.parametrize(
    "polygon",
    [
        pytest.param([RECTANGLE], id="list-of-parts"),
        pytest.param(np.array(RECTANGLE).reshape(-1, 2), id="array-Nx2"),
        pytest.param(np.array(RECTANGLE).reshape(-1, 2).tolist(), id="list-of-pairs"),
        pytest.param(torch.tensor(RECTANGLE, dtype=torch.float32), id="flat-tensor"),
    ],
)
def test_polygon_forms_equal_flat_polygon(polygon):
    flat = region_to_mask({"polygon": RECTANGLE}, IMAGE_SIZE)
    assert_mask_equal(region_to_mask({"type": "region", "polygon": polygon}, IMAGE_SIZE), flat)


def test_polygon_with_several_parts():
    second = [6, 0, 9, 0, 9, 2, 6, 2]
    mask = region_to_mask({"polygon": [RECTANGLE, second]}, IMAGE_SIZE)
    assert_mask_equal(mask, box_mask(2, 3, 5, 7) | box_mask(6, 0, 9, 2))


def test_polygon_partly_outside_is_clipped():
    mask = region_to_mask({"polygon": [-5, -5, 3, -5, 3, 3, -5, 3]}, IMAGE_SIZE)
    assert_mask_equal(mask, box_mask(0, 0, 3, 3))


def test_regions_to_masks_maps_the_list():
    masks = regions_to_masks([{"box": [2, 3, 5, 7]}, random_mask(2)], IMAGE_SIZE)
    assert len(masks) == 2
    assert_mask_equal(masks[0], box_mask(2, 3, 5, 7))
    assert_mask_equal(masks[1], random_mask(2))


def test_regions_to_masks_names_sample_and_region():
    with pytest.raises(ValueError, match=r"sample 3, region 1: .*empty"):
        regions_to_masks([{"box": [2, 3, 5, 7]}, np.zeros(IMAGE_SIZE)], IMAGE_SIZE, sample_index=3)


def test_regions_to_masks_rejects_a_single_region():
    with pytest.raises(TypeError, match=r"sample 0: regions must be a list"):
        regions_to_masks({"box": [2, 3, 5, 7]}, IMAGE_SIZE)


# Bad inputs: (region, error type, pattern the message must match after "sample 2, region 5: ")

BAD_REGIONS = {
    "empty-mask": (np.zeros(IMAGE_SIZE, np.uint8), ValueError, r"empty \(no pixel set\)"),
    "empty-rle": ({"rle": mask_to_rle(np.zeros(IMAGE_SIZE, np.uint8))}, ValueError, r"RLE is empty"),
    "wrong-shape": (np.ones((WIDTH, HEIGHT), np.uint8), ValueError, r"shape \(10, 8\).*\(8, 10\)"),
    "3d-mask": (np.ones((2, HEIGHT, WIDTH), np.uint8), ValueError, r"shape \(2, 8, 10\)"),
    "non-binary-uint8": (np.full(IMAGE_SIZE, 7, np.uint8), ValueError, r"not binary"),
    "non-binary-float": (np.full(IMAGE_SIZE, 0.5, np.float32), ValueError, r"not binary"),
    "non-binary-torch": (torch.full(IMAGE_SIZE, 2), ValueError, r"not binary"),
    "nan-mask": (np.full(IMAGE_SIZE, np.nan), ValueError, r"not binary"),
    "colored-rgb": (Image.new("RGB", (WIDTH, HEIGHT), (255, 0, 0)), ValueError, r"not binary"),
    "pil-unsupported-mode": (Image.new("RGBA", (WIDTH, HEIGHT)), TypeError, r"mode 'RGBA'"),
    "mask-as-list": ({"mask": [[0, 1], [1, 0]]}, TypeError, r"mask of type list"),
    "box-x1<=x0": ({"box": [10, 5, 4, 20]}, ValueError, r"box \[10, 5, 4, 20\] has x1 <= x0; pass"),
    "box-y1<=y0": ({"box": [1, 5, 4, 5]}, ValueError, r"has y1 <= y0"),
    "box-outside": ({"box": [2, 3, 11, 7]}, ValueError, r"outside the image .*\(8, 10\)"),
    "box-negative": ({"box": [-1, 3, 5, 7]}, ValueError, r"outside the image"),
    "box-3-numbers": ({"box": [1, 2, 3]}, ValueError, r"malformed.*4 finite numbers"),
    "box-nan": ({"box": [1, 2, float("nan"), 5]}, ValueError, r"malformed.*not finite"),
    "box-strings": ({"box": ["1", "2", "3", "4"]}, TypeError, r"malformed \(not all numbers\)"),
    "rle-wrong-size": ({"rle": mask_to_rle(np.ones((4, 4), np.uint8))}, ValueError, r"size \[4, 4\].*\(8, 10\)"),
    "rle-no-size": ({"rle": {"counts": [80]}}, ValueError, r"malformed.*'size'"),
    "rle-counts-sum": ({"rle": {"size": [HEIGHT, WIDTH], "counts": [3, 2, 10]}}, ValueError, r"sum to 15.*80"),
    "rle-negative-count": ({"rle": {"size": [HEIGHT, WIDTH], "counts": [90, -10]}}, ValueError, r"negative"),
    "rle-float-counts": ({"rle": {"size": [HEIGHT, WIDTH], "counts": [40.0, 40.0]}}, ValueError, r"malformed"),
    "rle-garbage": ({"rle": {"size": [HEIGHT, WIDTH], "counts": "garbage!!"}}, ValueError, r"not a valid compressed"),
    "rle-short-string": ({"rle": {"size": [HEIGHT, WIDTH], "counts": "32:"}}, ValueError, r"sum to"),
    "rle-empty-string": ({"rle": {"size": [HEIGHT, WIDTH], "counts": b""}}, ValueError, r"sum to 0"),
    "polygon-odd": ({"polygon": [1, 1, 5, 1, 5, 5, 1]}, ValueError, r"odd number of coordinates"),
    "polygon-2-points": ({"polygon": [[1, 1], [5, 5]]}, ValueError, r"only 2 point.*at least 3 points"),
    "polygon-outside": ({"polygon": [12, 10, 18, 10, 18, 14]}, ValueError, r"entirely outside the image"),
    "polygon-far-outside": ({"polygon": [20, 20, 30, 20, 30, 30]}, ValueError, r"vertex \[20, 20\] lies too far"),
    "polygon-nan": ({"polygon": [1, 1, 5, float("nan"), 5, 5]}, ValueError, r"not finite"),
    "polygon-malformed": ({"polygon": "1 2 3"}, ValueError, r"polygon .* is malformed"),
    "points": ({"points": [[3, 4]]}, ValueError, r"segmenter.*pixelrefer_hf\.segmentation"),
    "points-chat-form": ({"type": "region", "points": [[3, 4]]}, ValueError, r"segmenter"),
    "bare-4-list": ([2, 3, 5, 7], TypeError, r"bare list of 4 numbers.*\{\"box\": \[x0, y0, x1, y1\]\}"),
    "unknown-key": ({"bbox": [2, 3, 5, 7]}, TypeError, r"unknown region key.*'bbox'.*\{\"box\""),
    "other-type": ({"type": "image", "box": [2, 3, 5, 7]}, TypeError, r"type 'image' is not a region"),
    "two-keys": ({"box": [2, 3, 5, 7], "polygon": RECTANGLE}, TypeError, r"exactly one of the keys"),
    "empty-dict": ({}, TypeError, r"exactly one of the keys"),
    "string": ("a cat", TypeError, r"unsupported region of type str.*binary mask"),
    "none": (None, TypeError, r"unsupported region of type NoneType"),
}


@pytest.mark.parametrize("region, error, pattern", BAD_REGIONS.values(), ids=BAD_REGIONS.keys())
def test_bad_region_raises(region, error, pattern):
    with pytest.raises(error, match=r"^sample 2, region 5: .*" + pattern):
        region_to_mask(region, IMAGE_SIZE, sample_index=2, region_index=5)


@pytest.mark.parametrize("image_size", [(0, 10), (8,), (8.0, 10), "8x10"])
def test_bad_image_size_raises(image_size):
    with pytest.raises(ValueError, match=r"image_size .* invalid"):
        region_to_mask({"box": [2, 3, 5, 7]}, image_size)


def test_mask_to_rle_rejects_non_binary():
    with pytest.raises(ValueError, match=r"not binary"):
        mask_to_rle(np.full(IMAGE_SIZE, 3))


# Golden data recorded with the original PixelRefer code


def golden_dir() -> Path:
    if "PIXELREFER_GOLDEN_DIR" in os.environ:
        return Path(os.environ["PIXELREFER_GOLDEN_DIR"])
    fixtures = Path(__file__).parent / "fixtures" / "golden"
    return fixtures if fixtures.is_dir() else Path("/work/shared/golden")


def golden_box_cases() -> list[Path]:
    cases = []
    for manifest_path in sorted(golden_dir().glob("cases/*/manifest.json")):
        boxes = json.loads(manifest_path.read_text()).get("info", {}).get("boxes_xyxy_inclusive") or []
        if any(box is not None for box in boxes):
            cases.append(manifest_path.parent)
    return cases


GOLDEN_BOX_CASES = golden_box_cases()


@pytest.mark.parametrize("case_dir", GOLDEN_BOX_CASES or [None], ids=lambda case: getattr(case, "name", "none"))
def test_box_matches_golden_mask(case_dir):
    if case_dir is None:
        pytest.skip(f"no golden case with boxes_xyxy_inclusive under {golden_dir()}")
    boxes = json.loads((case_dir / "manifest.json").read_text())["info"]["boxes_xyxy_inclusive"]
    masks = np.load(case_dir / "inputs.npz")["masks"]
    checked = 0
    for index, box in enumerate(boxes):
        if box is None:
            continue
        x0, y0, x1, y1 = box
        mask = region_to_mask({"box": [x0, y0, x1 + 1, y1 + 1]}, masks.shape[1:], region_index=index)
        assert_mask_equal(mask, masks[index])
        checked += 1
    assert checked > 0
