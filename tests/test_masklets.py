"""Masklet propagation with a tiny random SAM2 video model: structure, prompts, preprocessing and input checks.

With random weights the predicted masks are meaningless, so these tests check shapes, value sets, frame coverage and
invariants (determinism, a mask prompt reproduced on its own frame), never specific pixels.
"""

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Sam2VideoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from pixelrefer_hf.segmentation import MaskletPropagator, postprocess_mask_logits, preprocess_frames
from pixelrefer_hf.tiny_random import tiny_sam2_video_config


VIDEO = Path(str(files("pixelrefer_hf") / "assets" / "dog_and_laptop.mp4"))
IMAGE_SIZE = 64  # the tiny model's square input
HEIGHT, WIDTH = 96, 128  # frames of the synthetic clips


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs fastest on one thread, and far slower with two on a busy CPU; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def propagator(tmp_path_factory) -> MaskletPropagator:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_sam2_video")
    Sam2VideoModel(tiny_sam2_video_config()).save_pretrained(folder)
    return MaskletPropagator.from_pretrained(folder, device="cpu")


def synthetic_video(num_frames: int = 4) -> np.ndarray:
    """A bright square moving right over a noisy background, `(T, 96, 128, 3)` uint8."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (num_frames, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, 30:70, 20 + 8 * t : 60 + 8 * t] = (230, 200, 40)
    return frames


def square_mask() -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[30:70, 20:60] = 1
    return mask


def assert_masklets(masklets: list, num_objects: int, num_frames: int, size: tuple[int, int]) -> None:
    assert isinstance(masklets, list) and len(masklets) == num_objects
    for masklet in masklets:
        assert list(masklet) == list(range(num_frames))
        for mask in masklet.values():
            assert isinstance(mask, np.ndarray)
            assert mask.dtype == np.uint8 and mask.shape == size
            assert set(np.unique(mask)) <= {0, 1}


def test_preprocess_constant_frame_is_normalised_colour():
    colour = np.array([10, 128, 250], dtype=np.uint8)
    frame = np.broadcast_to(colour, (48, 80, 3)).copy()
    pixel_values = preprocess_frames([frame, Image.fromarray(frame)], IMAGE_SIZE)
    assert pixel_values.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and pixel_values.dtype == torch.float32
    expected = (colour / 255.0 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)
    for channel in range(3):
        constant = torch.full((2, IMAGE_SIZE, IMAGE_SIZE), float(expected[channel]))
        torch.testing.assert_close(pixel_values[:, channel], constant, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [64, 256])
def test_preprocess_resize_matches_pil_antialiased_bilinear(size):
    frame = np.random.default_rng(1).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    pixel_values = preprocess_frames(frame[None], size)[0].numpy()
    mean = np.array(IMAGENET_DEFAULT_MEAN)[:, None, None]
    std = np.array(IMAGENET_DEFAULT_STD)[:, None, None]
    resized = (pixel_values * std + mean) * 255
    np.testing.assert_allclose(resized, np.round(resized), atol=1e-3)  # resized in uint8 before rescaling
    reference = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.abs(resized - reference).max() <= 1.0 + 1e-3


def test_postprocess_upsamples_and_thresholds_at_zero():
    logits = torch.tensor([-1.0, -1.0, 1.0, 1.0]).expand(2, 1, 4, 4).clone()
    logits[1] = -logits[1]
    masks = postprocess_mask_logits(logits, (8, 12))
    assert masks.shape == (2, 8, 12) and masks.dtype == np.uint8
    left = np.zeros((8, 12), dtype=np.uint8)
    left[:, :6] = 1
    np.testing.assert_array_equal(masks[0], 1 - left)
    np.testing.assert_array_equal(masks[1], left)


def test_constructor_from_model(propagator):
    wrapped = MaskletPropagator(propagator.model)
    assert wrapped.image_size == IMAGE_SIZE
    assert wrapped.device == torch.device("cpu") and wrapped.dtype == torch.float32
    with pytest.raises(TypeError, match="Sam2VideoModel"):
        MaskletPropagator(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "prompt",
    [
        {"box": [20, 30, 60, 70]},
        {"mask": square_mask()},
        {"mask": torch.from_numpy(square_mask()).bool()},
        {"points": [[40, 50]]},
        {"points": [[40, 50], [100, 10]], "labels": [1, 0]},
    ],
    ids=["box", "mask", "mask-tensor", "point", "points-labels"],
)
def test_each_prompt_kind_gives_a_mask_on_every_frame(propagator, prompt):
    masklets = propagator.propagate(synthetic_video(), [prompt], progress=False)
    assert_masklets(masklets, 1, 4, (HEIGHT, WIDTH))


def test_mask_prompt_is_reproduced_on_its_frame(propagator):
    mask = square_mask()
    masklets = propagator.propagate(synthetic_video(), [{"mask": mask}], progress=False)
    predicted = masklets[0][0].astype(bool)
    iou = (predicted & mask.astype(bool)).sum() / (predicted | mask.astype(bool)).sum()
    assert iou > 0.9


def test_two_objects_in_one_session(propagator):
    prompts = [{"box": [20, 30, 60, 70]}, {"points": [[100, 15]]}, {"mask": square_mask()}]
    masklets = propagator.propagate(synthetic_video(), prompts, progress=False)
    assert_masklets(masklets, 3, 4, (HEIGHT, WIDTH))


def test_prompt_on_a_middle_frame_covers_all_frames(propagator):
    frames = synthetic_video(5)
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[30:70, 36:76] = 1
    masklets = propagator.propagate(frames, [{"mask": mask}], prompt_frame=2, progress=False)
    assert_masklets(masklets, 1, 5, (HEIGHT, WIDTH))
    predicted = masklets[0][2].astype(bool)
    assert (predicted & mask.astype(bool)).sum() / (predicted | mask.astype(bool)).sum() > 0.9


def test_objects_prompted_on_different_frames(propagator):
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[30:70, 44:84] = 1
    prompts = [{"box": [20, 30, 60, 70], "frame": 1}, {"mask": mask, "frame": 3}, {"points": [[70, 50]]}]
    masklets = propagator.propagate(synthetic_video(5), prompts, prompt_frame=4, progress=False)
    assert_masklets(masklets, 3, 5, (HEIGHT, WIDTH))
    predicted = masklets[1][3].astype(bool)  # the mask prompt survives tracking the other objects through frame 3
    assert (predicted & mask.astype(bool)).sum() / (predicted | mask.astype(bool)).sum() > 0.9


def test_deterministic_and_input_forms_agree(propagator):
    frames = synthetic_video()
    prompts = [{"box": [20, 30, 60, 70]}, {"points": [[90, 40]]}, {"mask": square_mask(), "frame": 0}]
    runs = [
        propagator.propagate(frames, prompts, prompt_frame=1, progress=False),
        propagator.propagate(frames, prompts, prompt_frame=1, progress=False),
        propagator.propagate([Image.fromarray(frame) for frame in frames], prompts, prompt_frame=1, progress=False),
    ]
    assert runs[0][2][0].any()
    for run in runs[1:]:
        for masklet_a, masklet_b in zip(runs[0], run):
            for frame_index in masklet_a:
                np.testing.assert_array_equal(masklet_a[frame_index], masklet_b[frame_index])


def test_progress_bar_runs(propagator, capsys):
    masklets = propagator.propagate(synthetic_video(2), [{"box": [20, 30, 60, 70]}], progress=True)
    assert_masklets(masklets, 1, 2, (HEIGHT, WIDTH))
    assert "Propagating masklets" in capsys.readouterr().err


def test_real_video_box_prompt(propagator):
    av = pytest.importorskip("av")
    if not VIDEO.exists():
        pytest.skip(f"{VIDEO} is not available")
    frames = []
    with av.open(str(VIDEO)) as container:
        for frame in container.decode(video=0):
            frames.append(Image.fromarray(frame.to_ndarray(format="rgb24")).resize((128, 72), Image.BILINEAR))
            if len(frames) == 6:
                break
    assert len(frames) == 6
    masklets = propagator.propagate(frames, [{"box": [40, 20, 90, 60]}], prompt_frame=3, progress=False)
    assert_masklets(masklets, 1, 6, (72, 128))


FRAMES = synthetic_video(3)
BOX = [20, 30, 60, 70]


@pytest.mark.parametrize(
    ("frames", "prompts", "kwargs", "error", "match"),
    [
        (FRAMES[:0], [{"box": BOX}], {}, ValueError, "no frames"),
        ([], [{"box": BOX}], {}, ValueError, "no frames"),
        ([FRAMES[0], FRAMES[1, :50]], [{"box": BOX}], {}, ValueError, r"frame 1 is 50x128 .* frame 0 is 96x128"),
        (FRAMES.astype(np.float32), [{"box": BOX}], {}, TypeError, r"frame 0 has dtype float32; pass uint8"),
        (FRAMES[..., 0], [{"box": BOX}], {}, ValueError, r"\(T, H, W, 3\)"),
        (torch.from_numpy(FRAMES), [{"box": BOX}], {}, TypeError, "numpy"),
        (FRAMES, {"box": BOX}, {}, TypeError, "wrap a single prompt in a list"),
        (FRAMES, "box", {}, TypeError, "one prompt dict per object"),
        (FRAMES, [], {}, ValueError, "no prompts"),
        (FRAMES, [{"box": BOX}, "box"], {}, TypeError, "object 1: the prompt is a str"),
        (FRAMES, [{"box": BOX}], {"prompt_frame": 3}, ValueError, r"object 0: prompt_frame=3 is outside .* 3 frames"),
        (FRAMES, [{"box": BOX}, {"box": BOX, "frame": -1}], {}, ValueError, r"object 1: frame=-1 is outside"),
        (FRAMES, [{"box": BOX, "frame": 1.0}], {}, TypeError, r"object 0: frame must be an int"),
        (FRAMES, [{"box": [20, 30, 140, 70]}], {}, ValueError, r"object 0: box .* outside the image .*\(96, 128\)"),
        (FRAMES, [{"box": [-1, 30, 60, 70]}], {}, ValueError, r"object 0: box .* outside"),
        (FRAMES, [{"box": BOX}, {"box": [60, 30, 60, 70]}], {}, ValueError, r"object 1: box .* x1 <= x0"),
        (FRAMES, [{"box": [20, 70, 60, 30]}], {}, ValueError, r"object 0: box .* y1 <= y0"),
        (FRAMES, [{"box": [20, 30, 60]}], {}, ValueError, r"object 0: box .* malformed; pass 4 finite numbers"),
        (FRAMES, [{"box": ["a", 30, 60, 70]}], {}, TypeError, r"object 0: box .* malformed \(not all numbers\)"),
        (FRAMES, [{"mask": np.zeros((HEIGHT, WIDTH), np.uint8)}], {}, ValueError, r"object 0: mask is empty"),
        (FRAMES, [{"box": BOX}, {"mask": np.ones((50, 50), bool)}], {}, ValueError, r"object 1: mask has shape"),
        (FRAMES, [{"mask": square_mask() * 7}], {}, ValueError, r"object 0: mask is not binary"),
        (FRAMES, [{"mask": [[0, 1]]}], {}, TypeError, r"object 0: mask of type list"),
        (FRAMES, [{"points": [[130, 10]]}], {}, ValueError, r"object 0: point 0 .* outside the image .*\(96, 128\)"),
        (FRAMES, [{"points": [[10, 10], [10, -2]]}], {}, ValueError, r"object 0: point 1 .* outside"),
        (FRAMES, [{"points": [10, 10]}], {}, ValueError, r"object 0: points must have shape \(N, 2\)"),
        (FRAMES, [{"points": [[10, 10]], "labels": [1, 0]}], {}, ValueError, r"object 0: 2 labels for 1 points"),
        (FRAMES, [{"points": [[10, 10]], "labels": [2]}], {}, ValueError, r"object 0: labels \[2\] must be 1"),
        (FRAMES, [{"box": BOX, "labels": [1]}], {}, ValueError, r"object 0: labels only go with points"),
        (FRAMES, [{"box": BOX}, {}], {}, ValueError, r"object 1: the prompt has no mask, box or points"),
        (FRAMES, [{"box": BOX, "points": [[1, 1]]}], {}, ValueError, r"object 0: .* several prompt kinds \(box, po"),
        (FRAMES, [{"boxes": BOX}], {}, ValueError, r"object 0: unknown prompt keys \['boxes'\]"),
    ],
)
def test_bad_input_raises_clear_errors(propagator, frames, prompts, kwargs, error, match):
    with pytest.raises(error, match=match):
        propagator.propagate(frames, prompts, progress=False, **kwargs)


def test_propagate_in_clip_keys_masks_by_source_frame(propagator):
    from pixelrefer_hf.processing.video import load_video
    from pixelrefer_hf.segmentation import propagate_in_clip

    frames = synthetic_video(6)
    clip = load_video(list(frames), fps=None, max_frames=3, extra_frames=[1])
    assert clip.indices == [0, 2, 5]
    box = [20, 16, 60, 56]
    regions = propagate_in_clip(propagator, clip, [{"box": box}], prompt_frame=1, progress=False)
    assert regions[0]["frame"] == 1
    masklet = regions[0]["masklet"]
    assert 1 in masklet and set(masklet) <= {0, 1, 2, 5}
    assert all(mask.any() for mask in masklet.values())
    with pytest.raises(ValueError, match="prompt frame 3: frame 3 of the source video was not decoded"):
        propagate_in_clip(propagator, clip, [{"box": box}], prompt_frame=3, progress=False)
