"""The `pixelrefer` command, run in-process on the tiny random model and the golden checkpoint (offline, CPU)."""

import functools
from importlib.metadata import version
from importlib.resources import files

import numpy as np
import pytest
import torch
from golden import checkpoint_for, requires_checkpoint
from PIL import Image
from transformers import AutoModelForImageTextToText

from pixelrefer_hf import PixelReferForConditionalGeneration, cli, tiny_random
from pixelrefer_hf.processing.processing_pixelrefer import REGION_PLACEHOLDER


WTC_BOX = [425, 20, 472, 225]
TOWER_BOX = [405, 215, 492, 385]
CHECKPOINT = checkpoint_for("full")  # the golden set's original full checkpoint (None if it has none)
CLIP = str(files("pixelrefer_hf") / "assets" / "dog_and_laptop.mp4")


@pytest.fixture(scope="module", autouse=True)
def cached_tiny_model():
    """Builds the tiny model once per seed for the whole module instead of once per command."""
    cached = functools.cache(tiny_random.build_tiny_random)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiny_random, "build_tiny_random", cached)
        yield cached


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return cli.load_image()


@pytest.fixture
def tower_mask_png(tmp_path, image) -> tuple[str, np.ndarray]:
    """An elliptic mask around the bridge tower, saved as a 0/255 PNG."""
    rows, cols = np.mgrid[: image.height, : image.width]
    mask = (((rows - 300) / 80) ** 2 + ((cols - 448) / 40) ** 2 < 1).astype(np.uint8)
    path = tmp_path / "tower.png"
    Image.fromarray(mask * 255).save(path)
    return str(path), mask


def region_rows(out: str, count: int) -> list[list[str]]:
    """The columns of the region table's rows (after its header)."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("region "))
    return [line.split() for line in lines[header + 1 : header + 1 + count]]


def expected_row(index: int, crop) -> list[str]:
    return [
        str(index),
        ",".join(map(str, crop.box)),
        f"{crop.image.shape[1]}x{crop.image.shape[0]}",
        f"{crop.scale:.2f}",
        str(crop.num_tokens),
        f"{crop.mask.shape[0]}x{crop.mask.shape[1]}",
    ]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_describe_box(capsys, cached_tiny_model, image):
    box = ",".join(map(str, WTC_BOX))
    code, out, err = run(capsys, "describe", "--box", box, "--max-new-tokens", "3", "What is <region>?")
    assert code == 0, err
    assert err.lstrip().startswith("WARNING:") and "RANDOM weights" in err and "--model" in err
    assert out.startswith("Answer:")
    _, processor = cached_tiny_model(0)
    (crop,) = processor.object_crops(image, [{"box": WTC_BOX}])
    assert region_rows(out, 1) == [expected_row(0, crop)]


def test_describe_mask_and_box_with_visualization(capsys, tmp_path, cached_tiny_model, image, tower_mask_png):
    mask_path, mask = tower_mask_png
    vis = tmp_path / "vis" / "regions.png"
    box = ",".join(map(str, WTC_BOX))
    argv = ["--mask", mask_path, "--box", box, "--max-new-tokens", "2", "--save-vis", str(vis)]
    code, out, err = run(capsys, "describe", *argv, "How does this relate to that?")
    assert code == 0, err
    _, processor = cached_tiny_model(0)
    crops = processor.object_crops(image, [{"mask": mask}, {"box": WTC_BOX}])
    assert region_rows(out, 2) == [expected_row(i, crop) for i, crop in enumerate(crops)]
    with Image.open(vis) as picture:
        assert picture.format == "PNG"
        assert picture.width > image.width and picture.height >= image.height


def test_question_without_placeholders_is_prefixed(image):
    regions = [{"box": WTC_BOX}, {"box": TOWER_BOX}]
    (message,) = cli.build_messages({"type": "image", "image": image}, "Compare them.", regions)
    kinds = [item["type"] for item in message["content"]]
    assert kinds == ["image", "region", "text", "region", "text"]
    assert [item["text"] for item in message["content"] if item["type"] == "text"] == [" ", "\nCompare them."]
    assert [item["box"] for item in message["content"] if item["type"] == "region"] == [WTC_BOX, TOWER_BOX]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--box", "600,0,700,100", "What is <region>?"], "outside the image"),
        (["--box", "425,20,472,225", "--box", "405,215,492,385", "What is <region>?"], "1 <region> placeholder"),
        (["What is this?"], "no region given"),
        (["--box", "1,2,3", "What is <region>?"], "x0,y0,x1,y1"),
        (["--image", "missing.jpg", "--box", "1,2,3,4", "What is <region>?"], "cannot read image"),
        (["--video", "missing.mp4", "--box", "1,2,3,4", "What is <region>?"], "missing.mp4"),
        (["--video", CLIP, "--frame", "150", "--box", "1,2,3,4", "What is <region>?"], "[150] are outside"),
        (["--video", CLIP, "--image", "x.jpg", "--box", "1,2,3,4", "What is <region>?"], "not both"),
        (["--point", "1,2,3", "What is <region>?"], "x,y"),
    ],
)
def test_describe_errors(capsys, args, message):
    code, out, err = run(capsys, "describe", *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


def assert_one_error_line(code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == "" and "Traceback" not in err
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the command loads a model or SAM2."""

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"the command loaded {name!r} before refusing its arguments")

    monkeypatch.setattr(cli, "load_model", refuse)
    monkeypatch.setattr(cli, "load_segmenter", refuse)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(
    "args, messages",
    [
        (["--point", "9999,10"], ["--point", "[9999, 10]", "(H, W) = (422, 640)", "0 <= x <= 640"]),
        (["--video", CLIP, "--point", "10,2000"], ["--point", "[10, 2000]", "frame 0 of the video", "0 <= y <="]),
        (["--box", "1,2,3,4", "--fps", "0"], ["--fps", "'0'", "number > 0"]),
        (["--box", "1,2,3,4", "--fps", "-1"], ["--fps", "'-1'", "number > 0"]),
        (["--box", "1,2,3,4", "--fps", "nan"], ["--fps", "'nan'", "number > 0"]),
        (["--box", "1,2,3,4", "--max-new-tokens", "0"], ["--max-new-tokens", "'0'", "integer >= 1"]),
        (["--box", "1,2,3,4", "--max-new-tokens", "2.5"], ["--max-new-tokens", "'2.5'", "integer >= 1"]),
        (["--box", "1,2,3,4", "--device", "cuda"], ["--device", "'cuda' is not available", "pass one of: cpu"]),
        (["--box", "1,2,3,4", "--device", "cuda:1"], ["'cuda:1' is not available", "pass one of: cpu"]),
        (["--box", "1,2,3,4", "--device", "mps"], ["'mps' is not available", "pass one of: cpu"]),
        (["--box", "1,2,3,4", "--device", "tpu"], ["'tpu' is not a torch device", "pass one of: cpu"]),
        (["--box", "1,2,3,4", "--device", "meta"], ["'meta' is not supported", "pass one of: cpu"]),
    ],
)
def test_describe_refuses_arguments_before_loading_a_model(capsys, no_model, args, messages):
    code, out, err = run(capsys, "describe", *args, "What is <region>?")
    assert_one_error_line(code, out, err)
    for message in messages:
        assert message in err


@pytest.mark.parametrize("files", ["none", "config and processor"])
def test_describe_model_folder_without_weights(capsys, tmp_path, cached_tiny_model, files):
    if files != "none":
        model, processor = cached_tiny_model(0)
        processor.save_pretrained(tmp_path)
        model.config.save_pretrained(tmp_path)
    code, out, err = run(capsys, "describe", "--model", str(tmp_path), "--box", "1,2,3,4", "What is <region>?")
    assert_one_error_line(code, out, err)
    assert f"cannot load model {str(tmp_path)!r}" in err and "pass a converted local folder" in err


def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0 and err == ""
    assert out == f"pixelrefer-hf {version('pixelrefer-hf')}\n"


def test_describe_mask_of_wrong_size(capsys, tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((100, 100), 255, dtype=np.uint8)).save(path)
    code, _, err = run(capsys, "describe", "--mask", str(path), f"What is {REGION_PLACEHOLDER}?")
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "(100, 100)" in err and "image size" in err


@requires_checkpoint("full")
def test_convert_golden_checkpoint(capsys, tmp_path):
    dst = tmp_path / "converted"
    code, out, err = run(capsys, "convert", str(CHECKPOINT), str(dst), "--no-progress")
    assert code == 0, err
    assert "variant: full" in out and "processor: written" in out and str(dst) in out
    model = AutoModelForImageTextToText.from_pretrained(dst)
    assert isinstance(model, PixelReferForConditionalGeneration)


def test_convert_folder_without_config(capsys, tmp_path):
    code, out, err = run(capsys, "convert", str(tmp_path), str(tmp_path / "out"), "--no-progress")
    assert code == 2
    assert err.startswith("error:") and "config.json" in err
    assert out == ""


def test_describe_video_propagates_the_prompt_frame(capsys, tmp_path):
    vis = tmp_path / "video.png"
    argv = [
        "--video",
        CLIP,
        "--frame",
        "20",
        "--box",
        "420,0,940,560",
        "--max-new-tokens",
        "2",
        "--save-vis",
        str(vis),
    ]
    code, out, err = run(capsys, "describe", *argv, "What does <region> do?")
    assert code == 0, err
    assert "tiny SAM2 with RANDOM weights" in err
    assert "Crops on frame 20" in out and "masklet frames" in out
    (row,) = region_rows(out, 1)
    assert "20" in row[-1].split(",")
    assert set(int(k) for k in row[-1].split(",")) <= {14, 20, 43, 72, 101, 130}
    with Image.open(vis) as picture:
        assert picture.width > 1280


def test_describe_point_on_an_image(capsys):
    code, out, err = run(capsys, "describe", "--point", "448,120", "--max-new-tokens", "2", "What is <region>?")
    assert code == 0, err
    assert len(region_rows(out, 1)) == 1
