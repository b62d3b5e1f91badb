"""Untrusted and hostile files: media paths that leave their root, corrupt, truncated or EXIF-rotated images, images
and videos over the limits, frame folders with stray files, checkpoints with unsafe, corrupt or misshapen weights, and
no `trust_remote_code` anywhere. Each gives a clear error naming the file (and the fix), or the right pixels."""

import ast
import io
import os
import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from golden import checkpoint_for
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

from pixelrefer_hf.conversion import convert_checkpoint
from pixelrefer_hf.eval_tasks import documents
from pixelrefer_hf.eval_tasks.documents import InvalidDocument, RegionQuery, videorefer_query
from pixelrefer_hf.media_paths import resolve_media_path
from pixelrefer_hf.processing import object_crops, validation, video
from pixelrefer_hf.processing.processing_pixelrefer import PixelReferProcessor
from pixelrefer_hf.processing.qwen_tokenizer import build_qwen2_5_tokenizer
from pixelrefer_hf.processing.validation import as_rgb_array
from pixelrefer_hf.processing.video import load_video
from pixelrefer_hf.training import BadSampleError, PixelReferTrainingDataset, sample_to_messages
from pixelrefer_hf.training import dataset as training_data


ROOT = Path(__file__).parents[1]
CLIP = ROOT / "src" / "pixelrefer_hf" / "assets" / "dog_and_laptop.mp4"
TEMPLATE = "<|im_start|>user\n<image>\nWhat is{}?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def processor():
    return PixelReferProcessor.from_original_release(build_qwen2_5_tokenizer())


def conversation(placeholders: int = 1) -> list[dict]:
    return [{"from": "human", "value": "What is" + " <region>" * placeholders + "?"}, {"from": "gpt", "value": "A."}]


def png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that declares `width` x `height` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b""))
    return path


def rotated_jpeg(path: Path) -> np.ndarray:
    """Writes a JPEG stored 30 wide x 20 high with EXIF orientation 6 (displayed a quarter turn clockwise, 20 x 30)
    and returns the displayed pixels."""
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :10] = (250, 0, 0)  # the stored left third is red: displayed, it is the top third
    exif = Image.Exif()
    exif[validation.EXIF_ORIENTATION] = 6
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))


# Media paths from data files


@pytest.mark.parametrize(
    "name, allowed, expected",
    [
        ("images/a.jpg", False, "images/a.jpg"),
        ("./images/../a.jpg", False, "a.jpg"),
        ("ROOT/images/a.jpg", False, "images/a.jpg"),  # absolute, but inside the root
        ("/etc/passwd", True, "/etc/passwd"),
        ("../secret.jpg", True, "../secret.jpg"),
    ],
)
def test_media_paths_resolve_under_their_root(tmp_path, name, allowed, expected):
    root = tmp_path / "root"
    resolved = resolve_media_path(name.replace("ROOT", str(root)), root, allow_outside=allowed)
    assert resolved == Path(os.path.abspath(root / expected))


@pytest.mark.parametrize(
    "name, message",
    [
        ("/etc/passwd", r"media path '/etc/passwd' is absolute; it lies outside the media root \(.*\): give it rel"),
        ("../secret.jpg", r"'\.\./secret\.jpg' leaves the media root \(.*\) with '\.\.'; give a path inside it"),
        ("images/../../root/a.jpg", r"leaves the media root .*, or pass allow_outside_media_root=True"),
        ("", r"media path '' is empty or holds a NUL character"),
        ("a\0.jpg", r"empty or holds a NUL character"),
    ],
)
def test_media_paths_outside_their_root_are_refused(tmp_path, name, message):
    with pytest.raises(ValueError, match=message):
        resolve_media_path(name, tmp_path / "root")


def test_media_path_must_be_a_string():
    with pytest.raises(TypeError, match=r"media path 42 is not a string"):
        resolve_media_path(42, "/data")


def test_evaluation_documents_stay_under_the_data_folder(tmp_path, monkeypatch):
    data, outside = tmp_path / "data", tmp_path / "outside.png"
    (data / "coco").mkdir(parents=True)
    for path in (data / "coco" / "a.png", outside):
        Image.new("RGB", (8, 6)).save(path)
    monkeypatch.setenv(documents.DATA_ENV, str(data))
    assert RegionQuery(image=str(data / "coco" / "a.png"), regions=[{"box": [0, 0, 4, 4]}], doc_id=1).image
    for escaping in (str(outside), str(data / "coco" / ".." / ".." / "outside.png")):
        with pytest.raises(InvalidDocument, match=r"document 2: media path .* lies outside the media root .*_DATA=1"):
            RegionQuery(image=escaping, regions=[], doc_id=2)
    monkeypatch.setenv(documents.ALLOW_OUTSIDE_ENV, "1")
    assert RegionQuery(image=str(outside), regions=[], doc_id=3).image == str(outside)


@pytest.mark.parametrize(
    "element, message",
    [
        ({"video": "v.mp4", "annotation": []}, r"unreadable element \(KeyError: 'frame_idx'\)"),
        ({"video": "v.mp4", "frame_idx": "x", "annotation": []}, r"unreadable element \(ValueError"),
        ({"video": "v.mp4", "frame_idx": 0, "annotation": {"0": {}}}, r"annotation is not a list of objects"),
        ({"video": "v.mp4", "frame_idx": 0, "annotation": [{"0": 5}]}, r"object 0: unreadable annotation"),
        ({"video": "v.mp4", "frame_idx": 3, "annotation": [{"0": {"segmentation": {}}}]}, r"object 0: no mask on fr"),
    ],
)
def test_malformed_videorefer_elements_are_invalid_documents(tmp_path, element, message):
    with pytest.raises(InvalidDocument, match=r"^document 9[:,] " + message):
        videorefer_query(element, tmp_path, doc_id=9)


# Images: EXIF orientation, corrupt and truncated files, decompression bombs, size limits


def test_exif_rotated_photo_reads_as_displayed_from_a_path_or_an_opened_image(processor, tmp_path):
    displayed = rotated_jpeg(tmp_path / "rotated.jpg")
    assert displayed.shape == (30, 20, 3) and displayed[:10].mean() > displayed[10:].mean() + 50
    path = tmp_path / "rotated.jpg"
    for image in (path, str(path), Image.open(path), Image.open(path).convert("RGB")):
        np.testing.assert_array_equal(as_rgb_array(image, "sample 0"), displayed)
    mask = np.zeros((30, 20), np.uint8)
    mask[:10] = 1  # drawn on the displayed photo: its red top third
    inputs = [
        processor(text=TEMPLATE.format(" <region>"), images=[image], regions=[[mask]])
        for image in (str(path), Image.open(path), displayed)
    ]
    for other in inputs[1:]:
        for key in inputs[0]:
            assert torch.equal(inputs[0][key], other[key]), key
    sample = {"image": "rotated.jpg", "height": 30, "width": 20, "masks": [[[0, 0, 20, 0, 20, 10, 0, 10]]]}
    messages = sample_to_messages({**sample, "conversations": conversation()}, tmp_path, object_only=False)
    assert messages[0]["content"][-2]["mask"].shape == (30, 20)


def broken_images(tmp_path: Path) -> dict[str, Path]:
    photo = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo, "PNG")
    files = {
        "truncated.png": photo.getvalue()[: len(photo.getvalue()) // 2],
        "not_an_image.jpg": b"this is a text file with an image suffix",
        "empty.png": b"",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    return {name: tmp_path / name for name in files}


def test_corrupt_or_truncated_images_name_the_file(processor, tmp_path):
    expected = {"truncated.png": "is truncated or corrupt", "not_an_image.jpg": "cannot be read as an image"}
    expected["empty.png"] = "cannot be read as an image"
    for name, path in broken_images(tmp_path).items():
        with pytest.raises(ValueError, match=rf"^sample 0: image '.*{name}' {expected[name]} \(.*\); replace"):
            processor(text=TEMPLATE.format(" <region>"), images=[str(path)], regions=[[{"box": [0, 0, 4, 4]}]])
    with pytest.raises(ValueError, match=r"^sample 0: image '.*missing.png' does not exist; check the path"):
        as_rgb_array(tmp_path / "missing.png", "sample 0")


def test_corrupt_images_are_bad_training_samples(processor, tmp_path):
    broken_images(tmp_path)
    samples = [{"image": name, "conversations": conversation(0)} for name in ("truncated.png", "not_an_image.jpg")]
    training = PixelReferTrainingDataset(samples, processor, tmp_path)
    with pytest.raises(BadSampleError, match=r"sample 0: the processor refused it: .*truncated.png' is truncated"):
        training[0]
    with pytest.raises(BadSampleError, match=r"sample 1: image '.*not_an_image.jpg' cannot be read as an image"):
        training[1]


def test_a_decompression_bomb_is_refused_before_decoding(processor, tmp_path):
    bomb = png_header(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 200
    with pytest.raises(ValueError, match=r"^sample 0: image '.*bomb\.png' is refused as a decompression bomb"):
        processor(text=TEMPLATE.format(""), images=[str(bomb)])
    with pytest.raises(BadSampleError, match=r"image '.*bomb\.png' is refused as a decompression bomb"):
        sample_to_messages({"image": "bomb.png", "conversations": conversation(0)}, tmp_path, object_only=False)
    with pytest.raises(InvalidDocument, match=r"^document 5: image '.*bomb\.png' is refused as a decompression bomb"):
        RegionQuery(image=str(bomb), regions=[], doc_id=5)


def test_images_over_max_image_pixels_are_refused_from_their_header(processor, tmp_path, monkeypatch):
    monkeypatch.setattr(validation, "MAX_IMAGE_PIXELS", 20 * 30 - 1)
    large = png_header(tmp_path / "large.png", 30, 20)  # its pixel data is broken: it must never be decoded
    message = r"has 30 x 20 = 600 pixels, more than MAX_IMAGE_PIXELS = 599; pass a downscaled image"
    with pytest.raises(ValueError, match=r"^sample 0: image '.*large\.png' " + message):
        processor(text=TEMPLATE.format(""), images=[str(large)])
    with pytest.raises(ValueError, match=r"^sample 0: image " + message):
        processor(text=TEMPLATE.format(""), images=[np.zeros((20, 30, 3), np.uint8)])
    with pytest.raises(BadSampleError, match=r"image '.*large\.png' " + message):
        sample_to_messages({"image": "large.png", "conversations": conversation(0)}, tmp_path, object_only=False)


# Regions: at most MAX_REGIONS_PER_SAMPLE per sample, refused before any mask is drawn


def test_too_many_regions_fail_before_any_mask_is_drawn(processor, tmp_path, monkeypatch):
    def no_mask(*args, **kwargs):
        raise AssertionError("a mask was drawn")

    monkeypatch.setattr(object_crops, "region_to_mask", no_mask)
    monkeypatch.setattr(training_data, "region_to_mask", no_mask)
    count = validation.MAX_REGIONS_PER_SAMPLE + 1
    message = rf"{count} regions in one sample, more than MAX_REGIONS_PER_SAMPLE = {count - 1}; split the regions"
    with pytest.raises(ValueError, match=r"^sample 0: " + message):
        processor(
            text=TEMPLATE.format(" <region>" * count),
            images=[np.zeros((40, 40, 3), np.uint8)],
            regions=[[{"box": [0, 0, 8, 8]}] * count],
        )
    Image.new("RGB", (16, 12)).save(tmp_path / "photo.png")
    sample = {"image": "photo.png", "masks": [[[0, 0, 4, 0, 4, 4]]] * count, "conversations": conversation(count)}
    with pytest.raises(BadSampleError, match=message):
        sample_to_messages({**sample, "height": 12, "width": 16}, tmp_path, object_only=False)
    with pytest.raises(InvalidDocument, match=r"^document 1: " + message):
        RegionQuery(image=str(tmp_path / "photo.png"), regions=[{"box": [0, 0, 4, 4]}] * count, doc_id=1)


# Videos: frame folders, frames outside the video, limits, memory of the sampled frames only


def test_frame_folders_skip_stray_files_and_name_a_corrupt_frame(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (3, 8, 10, 3), dtype=np.uint8)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{index:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "._frame_000.png").write_bytes(b"macOS metadata")
    clip = load_video(tmp_path, fps=None)
    assert clip.indices == [0, 1, 2]
    np.testing.assert_array_equal(clip.frames, frames)
    (tmp_path / "frame_001.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"video '.*', frame 1: image '.*frame_001\.png' cannot be read as an image"):
        load_video(tmp_path, fps=None)
    Image.fromarray(frames[0, :4]).save(tmp_path / "frame_001.png")
    with pytest.raises(ValueError, match=r"frame 1 has shape \(4, 10, 3\) but its earlier frames \(8, 10, 3\)"):
        load_video(tmp_path, fps=None)


def test_a_video_without_a_frame_count_is_counted_from_its_packets(tmp_path):
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "yuv420p"
        for index in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 40 * index, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska does not say
    clip = load_video(path, fps=None)
    assert clip.indices == list(range(6)) and clip.fps == 4.0
    assert np.abs(clip.frames.mean(axis=(1, 2, 3)) - 40 * np.arange(6)).max() < 4


def test_a_region_on_a_frame_outside_the_video_names_the_region_and_the_file(processor):
    content = [{"type": "video", "video": str(CLIP)}, {"type": "text", "text": "What is "}]
    content += [{"type": "region", "frame": 14, "box": [0, 0, 9, 9]}, {"type": "text", "text": " and "}]
    content += [{"type": "region", "masklet": {400: {"box": [0, 0, 9, 9]}}}]
    with pytest.raises(
        ValueError, match=r"^sample 0, region 1: video '.*dog_and_laptop\.mp4': frames \[400\] are out"
    ):
        processor.apply_chat_template([{"role": "user", "content": content}], tokenize=True)


def test_video_limits_are_checked_before_decoding(monkeypatch):
    def no_decoding(*args):
        raise AssertionError("frames were decoded")

    monkeypatch.setattr(video, "_decode", no_decoding)
    monkeypatch.setattr(validation, "MAX_VIDEO_SECONDS", 4)
    with pytest.raises(ValueError, match=r"dog_and_laptop\.mp4' lasts 5 s \(150 frames at 29\.97 fps\), longer than"):
        load_video(CLIP)
    monkeypatch.setattr(validation, "MAX_VIDEO_SECONDS", 60)
    monkeypatch.setattr(validation, "MAX_DECODED_VIDEO_BYTES", 10 * 2**20)
    with pytest.raises(
        ValueError, match=r"decoding 5 frames of 1280 x 720 takes 13 MiB, more than .* = 10 MiB; sample"
    ):
        load_video(CLIP)
    monkeypatch.setattr(validation, "MAX_IMAGE_PIXELS", 1280 * 720 - 1)
    with pytest.raises(ValueError, match=r"dog_and_laptop\.mp4': a frame has 1280 x 720 = 921,600 pixels, more than"):
        load_video(CLIP)


def test_decoding_keeps_only_the_sampled_frames_in_memory():
    frame_bytes = 720 * 1280 * 3
    tracemalloc.start()
    try:
        clip = load_video(CLIP, fps=1)  # 5 of the 150 frames
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert clip.frames.shape == (5, 720, 1280, 3)
    assert peak < 6 * frame_bytes, f"peak {peak / frame_bytes:.1f} frames for 5 sampled frames"


# Checkpoints


@pytest.fixture
def original(tmp_path):
    folder = tmp_path / "original"
    shutil.copytree(checkpoint_for("full"), folder)
    for path in folder.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return folder


def test_safetensors_are_preferred_and_a_bin_beside_them_is_never_unpickled(original, tmp_path):
    (original / "pytorch_model.bin").write_bytes(b"a pickle that must never be loaded")
    report = convert_checkpoint(original, tmp_path / "out", progress=False)
    assert report.num_tensors == len(load_file(original / "model.safetensors"))


@pytest.mark.parametrize(
    "break_it, message",
    [
        (
            lambda folder: (folder / "model.safetensors").write_bytes(b"\x08" + b"\0" * 20),
            "is not a readable safetensors",
        ),
        (
            lambda folder: ((folder / "model.safetensors").unlink(), torch.save([torch.zeros(1)], folder / "w.bin")),
            r"w\.bin does not hold a state dict",
        ),
        (
            lambda folder: ((folder / "model.safetensors").unlink(), (folder / "w.bin").write_bytes(b"PK\3\4broken")),
            r"w\.bin is not a readable PyTorch checkpoint",
        ),
        (
            lambda folder: save_file({"model.norm.weight": torch.zeros(1)}, folder / "model-extra.safetensors"),
            r"both hold the tensor 'model\.norm\.weight'; .*remove a stale shard",
        ),
    ],
    ids=["corrupt-safetensors", "bin-not-a-state-dict", "corrupt-bin", "tensor-in-two-shards"],
)
def test_broken_shards_fail_naming_the_file(original, tmp_path, break_it, message):
    break_it(original)
    with pytest.raises(ValueError, match=message):
        convert_checkpoint(original, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_wrong_shaped_tensor_fails_naming_it(original, tmp_path):
    weights = load_file(original / "model.safetensors")
    weights["model.region_encoder.pos_linear.bias"] = torch.zeros(3)
    save_file(weights, original / "model.safetensors")
    expected = r"1 weights do not fit .*model\.object_tokenizer\.box_position_embedding\.bias has shape \[3\] but the"
    with pytest.raises(ValueError, match=expected):
        convert_checkpoint(original, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_nothing_sets_trust_remote_code():
    """No call passes `trust_remote_code` and no dict sets it, in the package or its scripts."""
    offenders = []
    for path in [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "scripts").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
    ]:
        for node in ast.walk(ast.parse(path.read_text())):
            keywords = [k.arg for k in node.keywords] if isinstance(node, ast.Call) else []
            keys = [getattr(k, "value", None) for k in node.keys] if isinstance(node, ast.Dict) else []
            if "trust_remote_code" in keywords + keys:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
