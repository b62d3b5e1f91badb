"""Video decoding and sampling, video inputs of the processor and model, and clear errors on bad videos."""

import json
import math
from functools import cache
from importlib.resources import files

import av
import numpy as np
import pytest
import torch
from golden import case_params, checkpoints, discover, variant_params
from PIL import Image
from samples import shrunk_clip
from transformers import AutoModelForImageTextToText, AutoProcessor

import pixelrefer_hf  # noqa: F401
from pixelrefer_hf.processing.video import VideoClip, load_video, sample_indices


CLIP = str(files("pixelrefer_hf") / "assets" / "dog_and_laptop.mp4")
VIDEO_CASES = [c for c in discover(modal="video") if c.manifest["settings"]["load"]["fn"] == "load_video_from_ids"]
VIDEO_CASE_PARAMS = case_params(VIDEO_CASES, "no video case decoded from a video file (load_video_from_ids)")
DOG = [420, 0, 940, 560]


@pytest.mark.parametrize("case", VIDEO_CASE_PARAMS)
def test_sampling_matches_the_original(case):
    info, load = case.manifest["info"], case.manifest["settings"]["load"]
    indices = sample_indices(info["video_num_frames"], info["video_avg_fps"], load["fps"], load["max_frames"])
    assert indices == info["sampled_frame_indices"]
    assert [i / info["video_avg_fps"] for i in indices] == pytest.approx(info["timestamps"], abs=1e-9)


def test_sampling_rules():
    assert sample_indices(150, 29.97, fps=1) == [14, 43, 72, 101, 130]
    assert sample_indices(150, 29.97, fps=None, max_frames=4) == [0, 49, 99, 149]
    assert sample_indices(3, 30.0, fps=None, max_frames=8) == [0, 1, 2]
    # Faster sampling than the video's frame rate falls back to uniform sampling, as in the original.
    assert sample_indices(10, 5.0, fps=50, max_frames=3) == [0, 4, 9]


def test_decoding_the_shipped_clip():
    clip = load_video(CLIP, fps=1, extra_frames=[0])
    assert clip.indices == [14, 43, 72, 101, 130]
    assert clip.fps == pytest.approx(30000 / 1001)
    assert clip.frames.shape == (5, 720, 1280, 3) and clip.frames.dtype == np.uint8
    with av.open(CLIP) as container:
        reference = {i: f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in (0, 43)}
    np.testing.assert_array_equal(clip.frame(43), reference[43])
    np.testing.assert_array_equal(clip.frame(0), reference[0])
    with pytest.raises(KeyError, match="frame 7 .* was not decoded"):
        clip.frame(7)


def test_sources_agree(tmp_path):
    from_path = load_video(CLIP, fps=None, max_frames=3)
    data = open(CLIP, "rb").read()
    from_bytes = load_video(data, fps=None, max_frames=3)
    with open(CLIP, "rb") as handle:
        from_file = load_video(handle, fps=None, max_frames=3)
    for other in (from_bytes, from_file):
        np.testing.assert_array_equal(other.frames, from_path.frames)
    for i, frame in enumerate(from_path.frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{i:04d}.png")
    folder = load_video(tmp_path, fps=None, max_frames=3)
    np.testing.assert_array_equal(folder.frames, from_path.frames)
    assert folder.fps == 3.0 and folder.timestamps == [0.0, 1 / 3, 2 / 3]
    in_memory = load_video(list(from_path.frames), fps=None, max_frames=3, source_fps=2.0)
    assert in_memory.timestamps == [0.0, 0.5, 1.0]


def test_bad_videos(tmp_path):
    with pytest.raises(ValueError, match="Cannot read video .*corrupt.mp4"):
        (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
        load_video(tmp_path / "corrupt.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(CLIP, "rb").read()[:200_000])
    with pytest.raises(ValueError, match="truncated.mp4"):
        load_video(truncated, fps=None, max_frames=150)
    empty_video = tmp_path / "zero_frames.mkv"
    container = av.open(str(empty_video), "w")
    stream = container.add_stream("mpeg4", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    container.start_encoding()
    container.close()
    with pytest.raises(ValueError, match="Cannot read video .*zero_frames.mkv"):
        load_video(empty_video)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frames"):
        load_video(tmp_path / "empty")
    with pytest.raises(ValueError, match="no frames"):
        load_video([])
    with pytest.raises(ValueError, match=r"frames \[150\] are outside the video"):
        load_video(CLIP, extra_frames=[150])
    with pytest.raises(ValueError, match="uint8"):
        load_video([np.zeros((4, 4, 3), np.float32)])


@cache
def _load(folder):
    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def small_clip():
    return shrunk_clip(320, 180)


@pytest.fixture(scope="module", params=variant_params())
def model_and_processor(request, converted):
    return _load(converted(checkpoints()[request.param]))


def video_messages(video, regions, question="What does <region> do?"):
    content = [{"type": "video", "video": video}]
    pieces = question.split("<region>")
    for piece, region in zip(pieces, regions):
        content += [{"type": "text", "text": piece}, {"type": "region", **region}]
    content.append({"type": "text", "text": pieces[-1]})
    return [{"role": "user", "content": content}]


def test_video_inputs(model_and_processor, small_clip):
    model, processor = model_and_processor
    dog = {"frame": 0, "box": [105, 0, 235, 140]}
    inputs = processor.apply_chat_template(
        video_messages(small_clip, [dog]), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    text = processor.decode(inputs["input_ids"][0])
    if processor.object_only:
        assert "pixel_values_videos" not in inputs and "<|video_pad|>" not in text
        assert "[Time 0.0:" + "<REGION>" * model.config.max_object_tokens + "]" in text
    else:
        assert inputs["video_grid_thw"].tolist() == [[5, 12, 22]]  # 180x320 -> 168x308 pixels
        assert int(inputs["video_compression_mask"].sum()) == text.count("<|video_pad|>")
        assert text.startswith("<|im_start|>user\nTime 0.5s:<|video_pad|>")
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_video_and_image_samples_batch_like_single_samples(model_and_processor, small_clip):
    model, processor = model_and_processor
    video_sample = video_messages(
        small_clip, [{"masklet": {14: {"box": [100, 0, 240, 140]}, 72: {"box": [90, 0, 230, 150]}}}]
    )
    image = small_clip.frames[2]
    image_sample = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "Describe "},
                {"type": "region", "box": [150, 110, 320, 180]},
                {"type": "text", "text": " and "},
                {"type": "region", "box": [100, 0, 240, 140]},
            ],
        }
    ]

    def greedy(messages):
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        return out[:, inputs["input_ids"].shape[1] :]

    singles = [greedy(video_sample)[0], greedy(image_sample)[0]]
    batched = greedy([video_sample, image_sample])
    for single, row in zip(singles, batched):
        assert torch.equal(single, row)


def test_bad_video_regions(model_and_processor, small_clip, tmp_path):
    _, processor = model_and_processor

    def run(regions, video=small_clip):
        return processor.apply_chat_template(
            video_messages(video, regions), add_generation_prompt=True, tokenize=True, return_dict=True
        )

    with pytest.raises(ValueError, match=r"sample 0, region 0: a region of a video must say which frame"):
        run([{"box": [10, 10, 50, 50]}])
    with pytest.raises(ValueError, match=r"sample 0: regions are drawn on frames \[7\].*not decoded"):
        run([{"frame": 7, "box": [10, 10, 50, 50]}])
    with pytest.raises(ValueError, match=r"sample 0, region 0: video '.*': frames \[400\] are outside the video"):
        run([{"masklet": {400: {"box": [10, 10, 50, 50]}}}], video=CLIP)
    with pytest.raises(ValueError, match=r"sample 0, region 0: a masklet is a non-empty dict"):
        run([{"masklet": {}}])
    with pytest.raises(ValueError, match=r"sample 0, region 0: .*outside"):
        run([{"frame": 0, "box": [10, 10, 500, 50]}])
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"sample 0: Cannot read video .*broken.mp4"):
        run([{"frame": 0, "box": [10, 10, 50, 50]}], video=str(tmp_path / "broken.mp4"))
    with pytest.raises(ValueError, match="one video or images, not both"):
        processor(
            text="<video><image><region>",
            images=[[small_clip.frames[0]]],
            videos=[small_clip],
            regions=[[{"frame": 0, "box": [1, 1, 9, 9]}]],
        )


def test_sam2_masklet_end_to_end(model_and_processor):
    """A box on one frame of the real mp4 -> tiny random SAM2 masklet -> processor -> model.generate."""
    from pixelrefer_hf.segmentation import propagate_in_clip
    from pixelrefer_hf.tiny_random import build_tiny_sam2

    model, processor = model_and_processor
    clip = load_video(CLIP, fps=1, extra_frames=[20])
    regions = propagate_in_clip(build_tiny_sam2(), clip, [{"box": DOG}], prompt_frame=20, progress=False)
    masklet = regions[0]["masklet"]
    assert regions[0]["frame"] == 20 and 20 in masklet and set(masklet) <= set(clip.indices + [20])
    assert all(mask.any() and mask.shape == (720, 1280) for mask in masklet.values())
    inputs = processor.apply_chat_template(
        video_messages(clip, regions), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    num_regions = len(masklet) if processor.object_only else 1
    assert inputs["region_grid_thw"].shape[0] == num_regions
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def original_smart_resize(height, width, factor, min_pixels, max_pixels):
    """The original release's `smart_resize` (pixelrefer/model/damovl_encoder/image_processing.py), for sizes of at
    least `factor`."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def test_video_frames_get_the_original_pixel_budget(converted):
    """720p frames, 10 of them, bind the budget: each frame gets the size the original gives it."""
    checkpoint = checkpoints()["full"]
    _, processor = _load(converted(checkpoint))
    config = json.loads((checkpoint / "config.json").read_text())
    merge, patch, num_frames = config["spatial_merge_size"], 14, 10
    # The original's encoder loader sets max_pixels = mm_max_length * (merge * patch)**2; a video is processed with
    # image_downsampling = merge, so its preprocessing divides that by (merge / merge)**2 = 1 and then by the number
    # of frames, with smart_resize factor patch * merge (6,422,528 // 10 for the release's mm_max_length 8192).
    frame_budget = int(config["mm_max_length"] * (merge * patch) ** 2 / (merge / merge) ** 2) // num_frames
    height, width = original_smart_resize(720, 1280, patch * merge, 3136, frame_budget)
    frames = np.random.default_rng(0).integers(0, 256, (num_frames, 720, 1280, 3), dtype=np.uint8)
    clip = VideoClip(
        frames=frames,
        indices=list(range(num_frames)),
        timestamps=[float(i) for i in range(num_frames)],
        fps=1.0,
    )
    inputs = processor(
        text="<video>\nWhat is <region>?", videos=[clip], regions=[[{"frame": 0, "box": [9, 9, 99, 99]}]]
    )
    assert (height, width) != original_smart_resize(720, 1280, patch * merge, 3136, 1857492 * merge**2 // num_frames)
    assert inputs["video_grid_thw"].tolist() == [[num_frames, height // patch, width // patch]]
