"""`pixelrefer demo`: the page served on 127.0.0.1 and driven through `gradio_client`, each result compared with the
same steps run directly (SAM2 propagation, the processor's crops and `<REGION>` tokens, greedy generation)."""

import socket
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pixelrefer_hf.cli import build_messages, build_parser, load_image, main
from pixelrefer_hf.demo.app import build_demo, launch_demo
from pixelrefer_hf.demo.command import load_demo_models
from pixelrefer_hf.demo.session import (
    FULL_NAME,
    LITE_NAME,
    DemoError,
    DemoModels,
    Workspace,
    referenced_regions,
)
from pixelrefer_hf.processing.video import load_video
from pixelrefer_hf.segmentation import propagate_in_clip
from pixelrefer_hf.tiny_random import build_tiny_sam2


ASSETS = Path(__file__).parent.parent / "src" / "pixelrefer_hf" / "assets"
IMAGE, VIDEO = str(ASSETS / "brooklyn_bridge.jpg"), str(ASSETS / "dog_and_laptop.mp4")
MAX_NEW_TOKENS = 8

# Gradio 6.31's queue calls pandas options that pandas 3 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning:gradio.queueing")


@pytest.fixture(scope="module")
def loaded() -> DemoModels:
    """The offline default of `pixelrefer demo` (tiny random PixelRefer and PixelRefer-Lite), with a tiny random SAM2
    whose seed finds the object on every sampled frame of the sample video, so that the propagation shows."""
    default = load_demo_models(build_parser().parse_args(["demo", "--device", "cpu"]))
    return DemoModels(default.models, build_tiny_sam2(seed=2), default.random_weights)


@pytest.fixture(scope="module")
def server(loaded, request):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = build_demo(loaded, max_new_tokens=MAX_NEW_TOKENS)
    launch_demo(demo, "127.0.0.1", port)
    request.addfinalizer(demo.close)
    return demo


@pytest.fixture
def client(server) -> Client:
    """A new visitor: a client keeps its own session, so its regions are its own."""
    return Client(server.local_url, verbose=False)


def rows(table: dict) -> list[dict]:
    """A `gr.Dataframe` value from the client as one dict per row."""
    return [dict(zip(table["headers"], row)) for row in table["data"]]


def direct_answer(model, processor, messages) -> tuple[str, int]:
    """The greedy answer to `messages` and the number of `<REGION>` tokens in the prompt."""
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    answer = processor.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return answer.strip(), int((inputs["input_ids"] == processor.region_token_id).sum())


def test_offline_default_runs_the_tiny_models_and_says_so(loaded, server):
    assert list(loaded.models) == [FULL_NAME, LITE_NAME]
    assert [model.config.object_only for model, _ in loaded.models.values()] == [False, True]
    assert loaded.random_weights == [f"{FULL_NAME} tiny-random", f"{LITE_NAME} tiny-random-lite", "SAM2 tiny-random"]
    page = httpx.get(server.local_url + "config").text
    assert "Random weights" in page and "(the masks and the words) is meaningless" in page


def test_image_box_answer_and_token_counts(client, loaded):
    client.predict(handle_file(IMAGE), api_name="/open_image")
    box = [405, 215, 492, 385]
    _, regions, _, status = client.predict(0, ",".join(map(str, box)), api_name="/add_region")
    answer, table = client.predict("What is <region1>?", FULL_NAME, MAX_NEW_TOKENS, api_name="/ask")[:2]

    frame = np.asarray(load_image(IMAGE))
    clip = load_video(frame[None])
    (mask,) = propagate_in_clip(loaded.segmenter, clip, [{"box": box}], 0, progress=False)[0]["masklet"].values()
    assert rows(regions) == [
        {"region": 1, "drawn as": "box 405,215,492,385", "frame": 0, "mask pixels": int(mask.sum())}
    ]
    assert status == f"Region 1 (box 405,215,492,385): SAM2 mask of {int(mask.sum())} px."
    model, processor = loaded.models[FULL_NAME]
    (crop,) = processor.object_crops(frame, [{"mask": mask}])
    (report,) = rows(table)
    assert report["object tokens"] == crop.num_tokens
    assert report["crop box x0,y0,x1,y1"] == ",".join(map(str, crop.box))
    assert report["scale"] == round(crop.scale, 2) and report["read on"] == "image"
    messages = build_messages({"type": "image", "image": frame}, "What is <region>?", [{"mask": mask}])
    expected, region_tokens = direct_answer(model, processor, messages)
    assert answer == expected and answer
    assert region_tokens == crop.num_tokens


def test_video_point_propagated_over_the_sampled_frames(client, loaded):
    *_, slider = client.predict(handle_file(VIDEO), 1.0, api_name="/open_video")
    clip = load_video(VIDEO, fps=1)
    assert slider["maximum"] == len(clip.indices) - 1 and slider["visible"]
    position, point = 1, [1000, 200]
    _, regions, _, status = client.predict(position, ",".join(map(str, point)), api_name="/add_region")
    answer, table = client.predict("What does <region1> do?", LITE_NAME, MAX_NEW_TOKENS, api_name="/ask")[:2]

    frame = clip.indices[position]
    (region,) = propagate_in_clip(loaded.segmenter, clip, [{"points": [point]}], frame, progress=False)
    assert list(region["masklet"]) == clip.indices  # SAM2 found the object on every sampled frame
    (drawn,) = rows(regions)
    assert drawn["frame"] == frame and drawn["masklet frames"] == ",".join(map(str, clip.indices))
    assert drawn["mask pixels"] == int(region["masklet"][frame].sum())
    assert status.endswith(f"propagated to {len(clip.indices)} frame(s).")
    model, processor = loaded.models[LITE_NAME]
    (report,) = rows(table)
    assert report["read on"] == ",".join(f"frame {index}" for index in clip.indices)
    messages = build_messages({"type": "video", "video": clip}, "What does <region> do?", [region])
    expected, region_tokens = direct_answer(model, processor, messages)
    assert report["object tokens"] == region_tokens == len(clip.indices) * processor.max_object_tokens
    assert answer == expected and answer


def test_brushed_region_is_the_painted_mask(client, tmp_path):
    client.predict(handle_file(IMAGE), api_name="/open_image")
    width, height = Image.open(IMAGE).size
    layer = np.zeros((height, width, 4), dtype=np.uint8)
    layer[100:140, 200:260] = (230, 25, 75, 255)
    Image.fromarray(layer).save(tmp_path / "layer.png")
    painted = {"background": handle_file(IMAGE), "layers": [handle_file(tmp_path / "layer.png")], "composite": None}
    _, regions, _, _ = client.predict(0, painted, api_name="/add_brush")
    client.predict(0, "10,10,60,60", api_name="/add_region")
    _, regions_after, _, _ = client.predict(0, api_name="/remove_last")

    assert (
        rows(regions)
        == rows(regions_after)
        == [{"region": 1, "drawn as": f"brush {40 * 60} px", "frame": 0, "mask pixels": 40 * 60}]
    )
    _, cleared, _, _ = client.predict(0, api_name="/clear_regions")
    assert cleared["data"] == []


def test_two_clicks_draw_a_box_and_the_frame_shows_the_masks(loaded):
    frame = np.asarray(load_image(IMAGE))
    workspace = Workspace.from_image(frame)
    assert workspace.add_corner(491, 384, 0, loaded.segmenter) is None and workspace.pending_corner == (491, 384)
    region = workspace.add_corner(405, 215, 0, loaded.segmenter)
    assert region.prompt == {"box": [405, 215, 492, 385]} and workspace.pending_corner is None
    workspace.remove_last()
    painted = np.zeros(frame.shape[:2], dtype=np.uint8)
    painted[200:260, 300:380] = 1
    workspace.add({"mask": painted}, 0, loaded.segmenter)
    changed = np.any(workspace.overlay(0) != frame, axis=-1)
    assert changed[painted > 0].all()  # tinted inside the mask
    near = np.zeros_like(changed)  # the mask's box, with room for the outline and the number above it
    near[160:265, 295:385] = True
    assert changed[~near].sum() == 0


@pytest.mark.parametrize(
    "steps, message",
    [
        ([("/ask", "What is <region1>?", FULL_NAME, 8)], "no image or video is open; open one first"),
        ([("/open_image", IMAGE), ("/ask", "What is <region1>?", FULL_NAME, 8)], "no region is drawn yet"),
        ([("/open_image", IMAGE), ("/add_region", 0, "600,100,700,200")], "lies outside the image of size"),
        ([("/open_image", IMAGE), ("/add_region", 0, "700,10")], "region 1 on the image: point 0"),
        ([("/open_image", IMAGE), ("/add_region", 0, "1,2,3")], "type x,y for a point or x0,y0,x1,y1 for a box"),
        ([("/open_image", IMAGE), ("/add_brush", 0, None)], "nothing is painted"),
        (
            [
                ("/open_image", IMAGE),
                ("/add_region", 0, "10,10,50,50"),
                ("/ask", "<region1> or <region2>?", LITE_NAME, 8),
            ],
            "refers to region 2 (it has 2 region reference(s)), but 1 region is drawn",
        ),
    ],
)
def test_bad_input_shows_one_message(client, steps, message):
    *setup, (api_name, *last) = steps
    for name, *args in setup:
        client.predict(*(handle_file(arg) if arg == IMAGE else arg for arg in args), api_name=name)
    with pytest.raises(AppError) as raised:
        client.predict(*last, api_name=api_name)
    assert message in str(raised.value) and "Traceback" not in str(raised.value)


def test_a_video_that_does_not_decode_shows_one_message(client, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(AppError, match="cannot use this video: Cannot read video .* as a video"):
        client.predict(handle_file(broken), 1.0, api_name="/open_video")


@pytest.mark.parametrize(
    "question, numbers",
    [
        ("What is <region2> next to <region1>?", [2, 1]),
        ("Compare <region> with <region>.", [1, 2]),
        ("<region2> is bigger than <region2>?", [2, 2]),
        ("Describe them.", [1, 2, 3]),
    ],
)
def test_referenced_regions(question, numbers):
    assert referenced_regions(question, 3) == numbers


@pytest.mark.parametrize(
    "question, count, message",
    [
        ("   ", 2, "the question is empty"),
        ("What is <region3>?", 2, "refers to region 3"),
        ("<region> <region> <region>", 2, "refers to region 3 (it has 3 region reference(s)), but 2 regions"),
        ("What is <region0>?", 2, "refers to region 0"),
    ],
)
def test_referenced_regions_errors(question, count, message):
    with pytest.raises(DemoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        referenced_regions(question, count)


def test_demo_without_gradio_is_one_error_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert main(["demo"]) == 2
    assert capsys.readouterr().err == (
        "error: the demo needs Gradio, which is not installed; install it with pip install 'pixelrefer-hf[demo]'\n"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--model", "tiny-random-lite"],
            "error: --model 'tiny-random-lite' is a PixelRefer-Lite checkpoint; pass it",
        ),
        (["--port", "70000"], "error: argument --port: '70000' is not a port; pass a whole number in 1..65535"),
    ],
)
def test_demo_command_errors(argv, message, capsys):
    assert main(["demo", "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err  # the random-weights warning of a tiny model may come first
    assert err.splitlines()[-1].startswith(message) and err.count("error:") == 1 and "Traceback" not in err
