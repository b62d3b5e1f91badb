"""Property-based tests (hypothesis) of region inputs through the processor, the training data reader and the
evaluation documents, and the determinism of object tokens.

Every input either gives a batch whose object-token counts match its regions and whose crops lie inside the image
(and hold the region), or raises a `ValueError`/`TypeError` naming the sample (and the region at fault). Accepted
masks, boxes, RLE and polygons refer to exactly the pixels they describe, checked against reference decoders written
here (COCO run lengths, "every pixel a box touches").

Hypothesis settings (`FUZZ`): `derandomize=True` (each test draws the same examples on every run, from a seed derived
from the test itself), no example database, `deadline=None`, and a fixed `max_examples` per test (`EXAMPLES`).
"""

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from pycocotools import mask as mask_utils

from pixelrefer_hf.eval_tasks.documents import InvalidDocument, RegionQuery, box_region, coco_region
from pixelrefer_hf.eval_tasks.model import query_messages
from pixelrefer_hf.modeling import PixelReferForConditionalGeneration
from pixelrefer_hf.processing import PixelReferProcessor
from pixelrefer_hf.processing.qwen_tokenizer import build_qwen2_5_tokenizer
from pixelrefer_hf.processing.regions import mask_to_rle, region_to_mask
from pixelrefer_hf.processing.validation import pixel_points
from pixelrefer_hf.tiny_random import tiny_config
from pixelrefer_hf.training import BadSampleError, sample_to_messages


FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
EXAMPLES = {"cheap": 150, "processor": 20, "video": 15, "training": 60, "documents": 150}
WHERE = re.compile(r"^sample 2, region 5: .{20,}")
# Refusals a valid region may still get: too small to survive the crop's patch grid, or an image under 2 x 2 pixels.
VALID_REGION_REFUSALS = re.compile(r"mask vanishes on the crop's patch grid|at least 2 x 2 pixels")


# Reference decoders, independent of the package


def runs_of(mask: np.ndarray) -> list[int]:
    """COCO run lengths of a `(H, W)` mask: column-major, alternating 0s and 1s, starting with 0s."""
    flat = mask.T.ravel()
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def mask_of_runs(runs: list[int], height: int, width: int) -> np.ndarray:
    return np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8).reshape(width, height).T


def runs_of_string(counts: str) -> list[int] | None:
    """A compressed COCO RLE string's run lengths (5 bits a character from '0', sign-extended, deltas from the fourth
    run on); None when it holds a character outside '0'..'o' or ends inside a value."""
    runs, value, shift = [], 0, 0
    for char in counts:
        chunk = ord(char) - 48
        if not 0 <= chunk < 64:
            return None
        value |= (chunk & 0x1F) << shift
        shift += 5
        if chunk & 0x20:
            continue
        if chunk & 0x10:
            value |= -1 << shift
        runs.append(value + (runs[-2] if len(runs) > 2 else 0))
        value, shift = 0, 0
    return None if shift else runs


def box_pixels(box: list[float], size: tuple[int, int]) -> np.ndarray:
    """Every pixel a box `[x0, y0, x1, y1]` (x1, y1 exclusive) touches."""
    mask = np.zeros(size, np.uint8)
    mask[math.floor(box[1]) : math.ceil(box[3]), math.floor(box[0]) : math.ceil(box[2])] = 1
    return mask


def polygon_pixels(parts: list[list[float]], size: tuple[int, int]) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, *size)))


# Strategies


SIDES = st.integers(1, 10)
MASK_FORMS = {
    "bool": lambda m: m.astype(bool),
    "uint8-01": lambda m: m,
    "uint8-0-255": lambda m: m * 255,
    "int16": lambda m: m.astype(np.int16),
    "float16": lambda m: m.astype(np.float16),
    "float32": lambda m: m.astype(np.float32),
    "float64": lambda m: m.astype(np.float64),
    "leading-1": lambda m: m[None],
    "torch-bool": lambda m: torch.from_numpy(m).bool(),
    "torch-uint8-0-255": lambda m: torch.from_numpy(m * 255),
    "torch-float32": lambda m: torch.from_numpy(m).float(),
    "torch-bfloat16": lambda m: torch.from_numpy(m).to(torch.bfloat16),
    "pil-1": lambda m: Image.fromarray(m.astype(bool)),
    "pil-L": lambda m: Image.fromarray(m * 255),
    "pil-P": lambda m: Image.fromarray(m).convert("P"),
    "pil-RGB": lambda m: Image.fromarray(m * 255).convert("RGB"),
    "pil-I;16": lambda m: Image.fromarray(m.astype(np.uint16)),
    "pil-I": lambda m: Image.fromarray(m.astype(np.int32)),
    "pil-F": lambda m: Image.fromarray(m.astype(np.float32)),
}
# Forms refused whatever the values: (conversion, error type, message).
REFUSED_MASK_FORMS = {
    "pil-RGBA": (lambda m: Image.fromarray(m * 255).convert("RGBA"), TypeError, "mode 'RGBA'"),
    "strings": (lambda m: m.astype(str), TypeError, "dtype <U"),
    "nested-list": (lambda m: m.tolist(), TypeError, "unsupported region of type list"),
}


@st.composite
def binary_masks(draw, size: tuple[int, int] | None = None) -> np.ndarray:
    shape = size or (draw(SIDES), draw(SIDES))
    return draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, 1)))


@st.composite
def coordinates(draw, low: float, high: float) -> float:
    """A pixel coordinate: mostly integers or halves in [low, high], sometimes any float, NaN or infinity."""
    return draw(
        st.one_of(
            st.integers(math.floor(low), math.ceil(high)),
            st.integers(math.floor(2 * low), math.ceil(2 * high)).map(lambda v: v / 2),
            st.floats(low, high),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        )
    )


def json_values():
    """Any JSON-like value, with the region keys likely to appear as dict keys."""
    keys = st.sampled_from(["mask", "box", "rle", "polygon", "points", "size", "counts", "type", "frame", "other"])
    scalars = st.none() | st.booleans() | st.integers(-5, 50) | st.floats() | st.text(max_size=4)
    scalars |= st.binary(max_size=4)
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=8), st.dictionaries(keys, children, max_size=3), st.tuples(children, children)
        ),
        max_leaves=12,
    )


@dataclass
class RegionCase:
    """A region as a user gives it and what it must become: its mask on `image_size`, or None if it must be refused."""

    region: object
    expected: np.ndarray | None


@st.composite
def region_cases(draw, size: tuple[int, int], faults: bool = True) -> RegionCase:
    """A region on an image of `size` in any form the processor takes; without `faults`, a valid one (but for
    polygons, which may still cover no pixel)."""
    height, width = size
    form = draw(st.sampled_from(["mask", "box", "rle", "polygon"] + ["points"] * faults))
    if form == "mask":
        wrong_size = faults and draw(st.integers(0, 9)) == 0
        mask = draw(binary_masks((height + 1, width) if wrong_size else size))
        mask[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] |= not faults
        convert = MASK_FORMS[draw(st.sampled_from(sorted(MASK_FORMS)))]
        region = convert(mask) if draw(st.booleans()) else {"mask": convert(mask)}
        return RegionCase(region, None if wrong_size or not mask.any() else mask)
    if form == "box":
        margin = 2 if faults else 0
        xs = [draw(coordinates(-margin, width + margin)), draw(coordinates(-margin, width + margin))]
        ys = [draw(coordinates(-margin, height + margin)), draw(coordinates(-margin, height + margin))]
        if not faults:
            xs = [min(xs[0], width - 0.5), max(xs[1], min(xs[0], width - 0.5) + 0.5)]
            ys = [min(ys[0], height - 0.5), max(ys[1], min(ys[0], height - 0.5) + 0.5)]
        if draw(st.integers(0, 3)) or not faults:  # mostly in order, as users give them
            xs, ys = sorted(xs), sorted(ys)
        box = [xs[0], ys[0], xs[1], ys[1]]
        x0, y0, x1, y1 = box
        valid = all(map(math.isfinite, box)) and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        return RegionCase({"box": box}, box_pixels(box, size) if valid else None)
    if form == "rle":
        mask = draw(binary_masks(size))
        mask[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] |= not faults
        rle = mask_to_rle(mask) if draw(st.booleans()) else {"size": [height, width], "counts": runs_of(mask)}
        damage = draw(st.sampled_from([None, None, "truncate", "size"])) if faults else None
        if damage == "truncate" and len(rle["counts"]) > 1:
            rle["counts"] = rle["counts"][: draw(st.integers(1, len(rle["counts"]) - 1))]
        elif damage == "size":
            rle["size"] = [height, width + 1]
        damaged = damage == "size" or (damage == "truncate" and len(rle["counts"]) < len(mask_to_rle(mask)["counts"]))
        if isinstance(rle["counts"], list):
            damaged = damaged or sum(rle["counts"]) != height * width
        return RegionCase({"rle": rle}, None if damaged or not mask.any() else mask)
    if form == "polygon":
        points = draw(st.integers(2 if faults else 3, 5))
        flat = [draw(st.integers(-faults, side + faults)) for _ in range(points) for side in (width, height)]
        expected = polygon_pixels([flat], size) if points >= 3 else None
        return RegionCase({"polygon": flat}, expected if expected is not None and expected.any() else None)
    return RegionCase({"points": [[draw(st.integers(0, width)), draw(st.integers(0, height))]]}, None)


# region_to_mask: every form, the same verdict


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(mask=binary_masks(), form=st.sampled_from(sorted(MASK_FORMS) + sorted(REFUSED_MASK_FORMS)), grow=st.booleans())
def test_masks_in_every_form_refer_to_their_pixels(mask, form, grow):
    size = (mask.shape[0] + grow, mask.shape[1])
    if form in REFUSED_MASK_FORMS:
        convert, error, message = REFUSED_MASK_FORMS[form]
        with pytest.raises(error) as refused:
            region_to_mask(convert(mask), size, sample_index=2, region_index=5)
        assert WHERE.match(str(refused.value)) and message in str(refused.value)
        return
    region = MASK_FORMS[form](mask)
    if grow or not mask.any():
        with pytest.raises(ValueError) as refused:
            region_to_mask(region, size, sample_index=2, region_index=5)
        assert WHERE.match(str(refused.value)) and ("shape" in str(refused.value) or "empty" in str(refused.value))
        return
    result = region_to_mask(region, size, sample_index=2, region_index=5)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, mask)


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(mask=binary_masks(), factor=st.sampled_from([2, 3, 7, 254]), as_torch=st.booleans())
def test_non_binary_masks_are_refused(mask, factor, as_torch):
    mask = mask * np.uint8(factor)
    region = torch.from_numpy(mask) if as_torch else mask
    if not mask.any():
        pytest.raises(ValueError, region_to_mask, region, mask.shape).match("empty")
        return
    with pytest.raises(ValueError, match=r"not binary .*threshold it yourself") as refused:
        region_to_mask(region, mask.shape, sample_index=2, region_index=5)
    assert WHERE.match(str(refused.value))


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(size=st.tuples(SIDES, SIDES), data=st.data())
def test_boxes_cover_every_pixel_they_touch(size, data):
    """A fractional box covers every pixel it touches (x0, y0 rounded down, x1, y1 up); one that leaves the image,
    is empty or not finite is refused."""
    height, width = size
    box = [data.draw(coordinates(-2, side + 2)) for side in (width, height, width, height)]
    as_form = data.draw(st.sampled_from([list, tuple, np.array, torch.tensor]))
    x0, y0, x1, y1 = box
    valid = all(map(math.isfinite, box)) and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    if not valid:
        with pytest.raises(ValueError) as refused:
            region_to_mask({"box": as_form(box)}, size, sample_index=2, region_index=5)
        assert WHERE.match(str(refused.value)) and "pass" in str(refused.value)
        return
    mask = region_to_mask({"box": as_form(box)}, size, sample_index=2, region_index=5)
    np.testing.assert_array_equal(mask, box_pixels(box, size))


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(mask=binary_masks(), compressed=st.booleans(), data=st.data())
def test_rle_valid_truncated_corrupted_or_resized(mask, compressed, data):
    """Valid RLE gives its mask; truncated counts and a wrong size are refused (pycocotools alone decodes most of them
    into a wrong mask); corrupted counts are refused or, when they still describe a whole image, give exactly the
    pixels they describe."""
    height, width = mask.shape
    counts = mask_to_rle(mask)["counts"] if compressed else runs_of(mask)
    damage = data.draw(st.sampled_from(["none", "truncate", "corrupt", "size"]))
    size = [height, width]
    if damage == "truncate" and len(counts) > 1:
        counts = counts[: data.draw(st.integers(1, len(counts) - 1))]
    elif damage == "corrupt":
        position = data.draw(st.integers(0, len(counts) - 1))
        if compressed:
            character = data.draw(st.characters(min_codepoint=32, max_codepoint=127))
            counts = counts[:position] + character + counts[position + 1 :]
        else:
            counts = [*counts[:position], counts[position] + data.draw(st.integers(-3, 3)), *counts[position + 1 :]]
    elif damage == "size":
        size = data.draw(st.sampled_from([[height + 1, width], [width, height], [height, width, 1], "4x4"]))
    region = {"rle": {"size": size, "counts": counts}}
    runs = runs_of_string(counts) if compressed else counts
    describes_the_image = (
        size == [height, width] and runs is not None and min(runs, default=0) >= 0 and sum(runs) == height * width
    )
    if damage == "truncate" and len(counts) < len(mask_to_rle(mask)["counts"] if compressed else runs_of(mask)):
        assert not describes_the_image, "a truncated RLE must never describe the whole image"
    if not describes_the_image or not any(runs[1::2]):
        with pytest.raises(ValueError) as refused:
            region_to_mask(region, (height, width), sample_index=2, region_index=5)
        assert WHERE.match(str(refused.value)) and "pass" in str(refused.value)
        return
    result = region_to_mask(region, (height, width), sample_index=2, region_index=5)
    np.testing.assert_array_equal(result, mask_of_runs(runs, height, width))
    if damage == "none":
        np.testing.assert_array_equal(result, mask)


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(size=st.tuples(SIDES, SIDES), data=st.data())
def test_polygons(size, data):
    """A polygon of at least 3 finite points near the image gives pycocotools' rasterisation clipped to the image;
    fewer points, odd coordinates, non-finite ones, vertices far outside and polygons covering no pixel are refused."""
    height, width = size
    points = data.draw(st.integers(0, 5))
    flat = [data.draw(coordinates(-2 * side, 3 * side)) for _ in range(points) for side in (width, height)]
    odd = data.draw(st.integers(0, 9)) == 0
    polygon = flat[:-1] if odd and flat else flat
    shape = data.draw(st.sampled_from(["flat", "parts", "pairs"]))
    if shape == "parts":
        region = {"polygon": [polygon]}
    elif shape == "pairs" and not odd:
        region = {"polygon": [polygon[i : i + 2] for i in range(0, len(polygon), 2)]}
    else:
        region = {"polygon": polygon}
    near = all(-width <= x <= 2 * width and -height <= y <= 2 * height for x, y in zip(flat[0::2], flat[1::2]))
    valid = points >= 3 and not odd and all(map(math.isfinite, flat)) and near
    expected = polygon_pixels([flat], size) if valid else None
    if expected is None or not expected.any():
        with pytest.raises(ValueError) as refused:
            region_to_mask(region, size, sample_index=2, region_index=5)
        assert WHERE.match(str(refused.value))
        return
    np.testing.assert_array_equal(region_to_mask(region, size, sample_index=2, region_index=5), expected)


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(region=json_values(), size=st.tuples(SIDES, SIDES))
def test_any_value_as_a_region_gives_a_mask_or_a_clear_error(region, size):
    try:
        mask = region_to_mask(region, size, sample_index=2, region_index=5)
    except (TypeError, ValueError) as error:
        assert WHERE.match(str(error)), str(error)
        return
    assert mask.dtype == np.uint8 and mask.shape == size and mask.any() and set(np.unique(mask)) <= {0, 1}


@settings(FUZZ, max_examples=EXAMPLES["cheap"])
@given(size=st.tuples(SIDES, SIDES), data=st.data())
def test_points_inside_the_image_or_a_clear_error(size, data):
    height, width = size
    count = data.draw(st.integers(0, 3))
    points = [[data.draw(coordinates(-1, width + 1)), data.draw(coordinates(-1, height + 1))] for _ in range(count)]
    try:
        array, labels = pixel_points(points, None, size, "sample 2, region 5")
    except (TypeError, ValueError) as error:
        assert WHERE.match(str(error))
        inside = all(math.isfinite(v) for p in points for v in p) and all(
            0 <= x <= width and 0 <= y <= height for x, y in points
        )
        assert not (inside and count), "points inside the image were refused"
        return
    np.testing.assert_array_equal(array, points)
    assert labels.tolist() == [1] * count
    assert ((array >= 0) & (array <= [width, height])).all()


# The processor: image batches


@pytest.fixture(scope="module")
def processors():
    """The tiny models' processors (the original release's settings), sharing one tokenizer."""
    tokenizer = build_qwen2_5_tokenizer()
    return {lite: PixelReferProcessor.from_original_release(tokenizer, object_only=lite) for lite in (False, True)}


@dataclass
class SampleCase:
    images: list[np.ndarray]
    cases: list[RegionCase]
    regions: list
    image_ids: list[int]
    placeholders: int
    bad_regions: set[int]


@st.composite
def sample_cases(draw, faults: bool) -> SampleCase:
    """A sample's images and regions; without `faults`, valid ones (image sizes from 2 x 2)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    sides = st.integers(2 - faults, 40)
    sizes = [(draw(sides), draw(sides)) for _ in range(draw(st.integers(1, 2)))]
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in sizes]
    cases, regions, image_ids, bad = [], [], [], set()
    for index in range(draw(st.integers(0, 3))):
        image_id = draw(st.integers(0, len(images) - 1))
        case = draw(region_cases(sizes[image_id], faults))
        naming = draw(st.sampled_from(["right"] * 5 + ["missing", "outside", "float"] * faults))
        region = case.region
        if naming != "missing":
            named = {"right": image_id, "outside": len(images), "float": image_id + 0.5}[naming]
            region = {**(region if isinstance(region, dict) else {"mask": region}), "image_index": named}
        if case.expected is None or naming in ("outside", "float") or (naming == "missing" and len(images) > 1):
            bad.add(index)
        cases.append(case)
        regions.append(region)
        image_ids.append(image_id)
    placeholders = max(0, len(cases) + draw(st.sampled_from([0, 0, 0, 0, 0, 0, -1, 1]) if faults else st.just(0)))
    return SampleCase(images, cases, regions, image_ids, placeholders, bad)


def region_runs(input_ids: torch.Tensor, region_token_id: int) -> list[list[int]]:
    """Per row, the lengths of its runs of consecutive `<REGION>` tokens."""
    runs = []
    for row in (input_ids == region_token_id).tolist():
        text = "".join("R" if is_region else "." for is_region in row)
        runs.append([len(run) for run in re.findall("R+", text)])
    return runs


def crop_boxes(region_boxes: torch.Tensor, image_sizes: list[tuple[int, int]]) -> list[tuple[float, ...]]:
    """The inclusive crop boxes `(x0, y0, x1, y1)` in pixels, undoing `position_boxes`' normalisation (which reads
    the box as (top, left, bottom, right) over (W - 1, H - 1))."""
    boxes = []
    for (top, left, bottom, right), (height, width) in zip(region_boxes.tolist(), image_sizes):
        boxes.append((left * (height - 1), top * (width - 1), right * (height - 1), bottom * (width - 1)))
    return boxes


def assert_batches_equal(first, second) -> None:
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def expected_problem(samples: list[SampleCase]) -> tuple[int, set[int] | None] | None:
    """The first sample the processor must refuse and its bad regions (None: the sample itself), or None."""
    for index, sample in enumerate(samples):
        if sample.placeholders != len(sample.cases):
            return index, None
        if sample.bad_regions:
            return index, sample.bad_regions
    return None


def check_refusal(message: str, problem: tuple[int, set[int] | None] | None) -> None:
    event("refused")
    named = re.match(r"^sample (\d+)(?:, region (\d+))?: .{20,}", message)
    assert named, f"the error names no sample: {message}"
    sample, region = int(named[1]), None if named[2] is None else int(named[2])
    if problem is not None and sample == problem[0] and (problem[1] is None or region in problem[1]):
        return
    assert region is not None and VALID_REGION_REFUSALS.search(message), f"a valid input was refused: {message}"


@pytest.mark.parametrize("object_only", [False, True], ids=["full", "lite"])
@settings(FUZZ, max_examples=EXAMPLES["processor"])
@given(faults=st.booleans(), data=st.data())
def test_processor_batches_or_clear_errors(processors, object_only, faults, data):
    processor = processors[object_only]
    samples = data.draw(st.lists(sample_cases(faults), min_size=1, max_size=2))
    texts = [
        "<|im_start|>user\n" + "<image>\n" * len(s.images) + "What is" + " <region>" * s.placeholders + "?<|im_end|>\n"
        for s in samples
    ]
    call = dict(text=texts, images=[s.images for s in samples], regions=[s.regions for s in samples])
    problem = expected_problem(samples)
    try:
        inputs = processor(**call)
    except (TypeError, ValueError) as error:
        check_refusal(str(error), problem)
        return
    assert problem is None, f"the processor accepted a bad sample: {problem}"
    event("accepted")
    assert_batches_equal(inputs, processor(**call))  # the same input, the same batch
    regions = [(s.images[i].shape[:2], case) for s in samples for i, case in zip(s.image_ids, s.cases)]
    runs = region_runs(inputs["input_ids"], processor.region_token_id)
    assert [len(row) for row in runs] == [len(sample.cases) for sample in samples]
    if not regions:
        return
    cells = inputs["region_mask_hw"].prod(-1).tolist()
    grid_masks = inputs["region_masks"].split(cells)
    max_tokens = processor.max_object_tokens
    expected = [max_tokens if object_only else min(max_tokens, int(mask.sum())) for mask in grid_masks]
    assert [length for row in runs for length in row] == expected
    for (x0, y0, x1, y1), (size, case) in zip(crop_boxes(inputs["region_boxes"], [s for s, _ in regions]), regions):
        rows, cols = np.nonzero(case.expected)
        assert 0 <= x0 <= cols.min() + 1e-3 and cols.max() <= x1 + 1e-3 and x1 <= size[1] - 1 + 1e-3
        assert 0 <= y0 <= rows.min() + 1e-3 and rows.max() <= y1 + 1e-3 and y1 <= size[0] - 1 + 1e-3


# The processor: regions of a video (frame indices)


# Mostly frames of the (2- or 3-frame) test video; sometimes outside it, negative, or not an int.
FRAME_VALUES = st.one_of(
    st.integers(0, 1), st.integers(0, 1), st.integers(-1, 4), st.sampled_from([1.0, "1", True, None])
)


@st.composite
def video_region(draw, num_frames: int, size: tuple[int, int]) -> tuple[object, list]:
    """A region of a video and the frames it is drawn on (as given)."""
    box = {"box": [1, 1, size[1] - 1, size[0] - 1]}
    if draw(st.booleans()):
        frame = draw(FRAME_VALUES)
        return {"frame": frame, **box}, [frame]
    frames = draw(st.lists(FRAME_VALUES, min_size=1, max_size=3, unique_by=repr))
    region = {"masklet": {frame: box for frame in frames}}
    if draw(st.booleans()):
        region["frame"] = draw(st.sampled_from(frames) | FRAME_VALUES)
    return region, frames


def video_region_is_valid(region: dict, frames: list, num_frames: int, object_only: bool) -> bool:
    def frame_ok(frame, in_range=True):
        integer = isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0
        return integer and (frame < num_frames or not in_range)

    if "masklet" not in region:
        return frame_ok(region["frame"])
    key = region.get("frame")
    if len({repr(frame) for frame in frames}) != len(region["masklet"]) or not all(frame_ok(f, False) for f in frames):
        return False  # keys that collide as dict keys (True == 1 == 1.0) or are not frame indices
    if key is not None and (not frame_ok(key, False) or key not in region["masklet"]):
        return False
    used = frames if object_only else [min(frames) if key is None else key]
    return all(frame_ok(frame) for frame in used)


@pytest.mark.parametrize("object_only", [False, True], ids=["full", "lite"])
@settings(FUZZ, max_examples=EXAMPLES["video"])
@given(data=st.data(), num_frames=st.integers(2, 3))
def test_video_regions_name_their_frames(processors, object_only, data, num_frames):
    processor = processors[object_only]
    frames = np.random.default_rng(num_frames).integers(0, 256, (num_frames, 16, 20, 3), dtype=np.uint8)
    drawn = data.draw(st.lists(video_region(num_frames, (16, 20)), min_size=1, max_size=2))
    regions = [region for region, _ in drawn]
    valid = [video_region_is_valid(region, given, num_frames, object_only) for region, given in drawn]
    text = "<|im_start|>user\n<video>\n" + "What is <region>?" * len(regions) + "<|im_end|>\n"
    try:
        inputs = processor(text=text, videos=[frames], regions=[regions])
    except (TypeError, ValueError) as error:
        check_refusal(str(error), (0, {i for i, ok in enumerate(valid) if not ok}))
        return
    assert all(valid), f"the processor accepted bad video regions {regions}"
    event("accepted")
    runs = region_runs(inputs["input_ids"], processor.region_token_id)[0]
    per_region = [len(region["masklet"]) if object_only and "masklet" in region else 1 for region in regions]
    assert len(runs) == sum(per_region)


# The training data reader


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(root / "photo.png")
    return root


IMAGE_SIZE = (12, 16)
BAD_ANNOTATIONS = ["truncated-rle", "resized-rle", "short-counts", "junk"]
IMAGE_FIELDS = {
    "photo.png": True,
    "./photo.png": True,
    "missing.png": False,
    "/etc/hosts": False,
    "../photo.png": False,
    42: False,
    "": False,
}


@st.composite
def annotations(draw) -> tuple[object, np.ndarray | None, bool]:
    """A COCO mask annotation of a `IMAGE_SIZE` image, the mask it must give (None: refused), and whether it needs
    the sample's height and width."""
    mask = draw(binary_masks(IMAGE_SIZE))
    kind = draw(st.sampled_from(["rle"] * 4 + ["counts"] * 2 + ["polygon"] * 2 + BAD_ANNOTATIONS))
    rle = mask_to_rle(mask)
    expected = mask if mask.any() else None
    if kind == "rle":
        return rle, expected, False
    if kind == "truncated-rle":
        return {**rle, "counts": rle["counts"][: max(1, len(rle["counts"]) - 1)]}, None, False
    if kind == "resized-rle":
        return mask_to_rle(np.pad(mask, ((0, 1), (0, 0)))), None, False
    if kind == "counts":
        return {"size": list(IMAGE_SIZE), "counts": runs_of(mask)}, expected, True
    if kind == "short-counts":
        return {"size": list(IMAGE_SIZE), "counts": runs_of(mask)[:-1]}, None, True
    if kind == "polygon":
        flat = [draw(st.integers(0, side)) for _ in range(draw(st.integers(2, 4))) for side in (16, 12)]
        pixels = polygon_pixels([flat], IMAGE_SIZE) if len(flat) >= 6 else None
        return [flat], pixels if pixels is not None and pixels.any() else None, True
    return draw(st.sampled_from([{"box": [1, 2, 3, 4]}, "counts", 7, None, {"counts": 5}])), None, False


@settings(FUZZ, max_examples=EXAMPLES["training"])
@given(
    image=st.sampled_from(["photo.png"] * 6 + list(IMAGE_FIELDS)),
    drawn=st.lists(annotations(), max_size=3),
    placeholder_shift=st.sampled_from([0] * 8 + [-1, 1]),
    size_field=st.sampled_from(["right"] * 6 + ["none", "wrong"]),
)
def test_training_samples_give_their_masks_or_a_clear_error(media_root, image, drawn, placeholder_shift, size_field):
    placeholders = max(0, len(drawn) + placeholder_shift)
    sample = {
        "image": image,
        "masks": [annotation for annotation, _, _ in drawn],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is" + " <region>" * placeholders + "?"},
            {"from": "gpt", "value": "A thing."},
        ],
    }
    if size_field != "none":
        sample["height"], sample["width"] = IMAGE_SIZE if size_field == "right" else (IMAGE_SIZE[0] + 1, IMAGE_SIZE[1])
    masks_ok = all(expected is not None and not (sized and size_field == "none") for _, expected, sized in drawn)
    valid = IMAGE_FIELDS[image] and placeholders == len(drawn) and size_field != "wrong" and masks_ok
    try:
        messages = sample_to_messages(sample, media_root, object_only=False)
    except BadSampleError as error:
        event("refused")
        assert str(error).startswith("<samples>, sample 0: ") and len(str(error)) > 40
        assert not valid, f"a valid sample was refused: {error}"
        return
    assert valid, f"a bad sample was accepted: {sample}"
    event("accepted")
    masks = [item["mask"] for message in messages for item in message["content"] if item["type"] == "region"]
    assert len(masks) == len(drawn)
    for mask, (_, expected, _) in zip(masks, drawn):
        np.testing.assert_array_equal(mask, expected)


# The evaluation documents


@settings(FUZZ, max_examples=EXAMPLES["documents"])
@given(annotation=json_values(), size=st.tuples(SIDES, SIDES), with_size=st.booleans())
def test_coco_annotations_become_regions_or_invalid_documents(annotation, size, with_size):
    height, width = size if with_size else (None, None)
    try:
        region = coco_region(annotation, height, width, doc_id=7)
    except InvalidDocument as error:
        assert str(error).startswith("document 7: ")
        return
    try:
        mask = region_to_mask(region, size, sample_index=2, region_index=5)
    except (TypeError, ValueError) as error:
        assert WHERE.match(str(error))
        return
    assert mask.shape == size and mask.any()


@settings(FUZZ, max_examples=EXAMPLES["documents"])
@given(
    box=st.one_of(json_values(), st.lists(st.one_of(st.integers(-5, 20), st.floats()), min_size=4, max_size=4)),
    size=st.tuples(SIDES, SIDES),
)
def test_document_boxes_are_inside_their_image_or_invalid(box, size):
    height, width = size
    try:
        region = box_region(box, height, width, doc_id="d")
    except InvalidDocument as error:
        assert str(error).startswith("document d: ")
        return
    x, y, w, h = (int(value) for value in box)
    np.testing.assert_array_equal(
        region_to_mask(region, size), box_pixels([max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)], size)
    )


# Determinism: the same inputs give the same object tokens and greedy answers


@pytest.fixture(scope="module", params=[False, True], ids=["full", "lite"])
def tiny(request, processors):
    config = tiny_config(object_only=request.param)
    torch.manual_seed(0)
    model = PixelReferForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = model.generation_config.eos_token_id = config.text_config.eos_token_id
    return model, processors[request.param]


def test_repeated_runs_and_batch_composition_give_the_same_object_tokens(tiny, tmp_path_factory):
    """The same sample gives the same inputs, object tokens and greedy answer on every run, alone or among others, and
    through the lmms-eval model's messages (a photo file) as through the processor (its pixels)."""
    model, processor = tiny
    rng = np.random.default_rng(3)
    photo, other = (rng.integers(0, 256, size, dtype=np.uint8) for size in ((40, 56, 3), (48, 30, 3)))
    mask = np.zeros((40, 56), np.uint8)
    mask[5:30, 10:40] = 1
    template = "<|im_start|>user\n<image>\n{}<|im_end|>\n<|im_start|>assistant\n"
    alone = dict(text=template.format("What is <region>?"), images=[photo], regions=[[mask]])
    inputs = [processor(**alone) for _ in range(2)]
    assert_batches_equal(*inputs)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(photo).save(path)
    query = RegionQuery(image=str(path), regions=[{"rle": mask_to_rle(mask)}], doc_id=0)
    messages = query_messages("<image>\nWhat is <region>?", query)
    assert_batches_equal(
        inputs[0], processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    )
    batch = processor(
        text=[template.format("Compare <region> with <region>, and say why."), alone["text"]],
        images=[[other], [photo]],
        regions=[[{"box": [0, 0, 20, 30]}, {"polygon": [2, 2, 28, 4, 15, 40]}], [{"rle": mask_to_rle(mask)}]],
    )
    with torch.no_grad():
        tokens = [model(**inputs[i]).region_hidden_states for i in range(2)]
        batched = model(**batch).region_hidden_states
        answers = [model.generate(**inputs[i], max_new_tokens=4, do_sample=False) for i in range(2)]
    assert torch.equal(tokens[0], tokens[1])
    torch.testing.assert_close(batched[-len(tokens[0]) :], tokens[0], rtol=0, atol=1e-5)
    assert torch.equal(answers[0], answers[1])
