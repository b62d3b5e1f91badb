"""`pixelrefer caption` and its engine on the fixtures of `tests/fixtures/captioning` (the three published formats,
with malformed annotations) and the tiny random models: the prefix-shared and batched strategies give the captions of
one `generate` per region (ids exactly, scores within 1e-4) with less vision and LLM work; the three readers; one JSON
line per annotation, bad ones counted or (`--strict`) fatal; a run killed after its first chunk and restarted writes
the bytes of an uninterrupted run; two processes (`accelerate launch`) merge to the bytes of one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pixelrefer_hf.captioning import STRATEGIES, CaptionItem, RegionCaptioner
from pixelrefer_hf.captioning import command as caption_command
from pixelrefer_hf.captioning.annotations import BadAnnotation, read_annotations
from pixelrefer_hf.cli import main
from pixelrefer_hf.processing.validation import as_rgb_array
from pixelrefer_hf.processing.video import load_video
from pixelrefer_hf.tiny_random import TINY_LITE_MODEL_NAME, TINY_MODEL_NAME, build_tiny_random


FIXTURES = Path(__file__).parent / "fixtures" / "captioning"
MEDIA = FIXTURES / "media"
COCO, TRAINING, VIDEOREFER = (
    FIXTURES / name for name in ("coco_instances.json", "training_samples.json", "videorefer.json")
)
BAD_COCO = {
    206: "RLE size [50, 50] does not match the image size",
    207: "covers no pixel",
    301: "does not exist",
    401: "leaves the media root",
    501: "image_id 99 is not in 'images'",
}


@pytest.fixture(scope="module")
def models():
    return {TINY_MODEL_NAME: build_tiny_random(), TINY_LITE_MODEL_NAME: build_tiny_random(object_only=True)}


@pytest.fixture(autouse=True)
def same_models(models, monkeypatch):
    """In-process commands reuse the module's tiny models (same seed, same weights as the ones they would build)."""
    monkeypatch.setattr(caption_command, "load_model", lambda name, seed, device: models[name])


def caption_args(annotations: Path, output: Path, *extra: str) -> list[str]:
    options = ["caption", "--annotations", str(annotations), "--media-root", str(MEDIA), "--output", str(output)]
    return [*options, "--batch-size", "4", "--max-new-tokens", "8", "--no-progress", "--chunk-size", "1", *extra]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The engine.


def engine_items(object_only: bool, processor) -> list[CaptionItem]:
    """The fixture's stools (five regions and an RLE of another size than the image), a region of the bridge and a
    box outside it, and two objects of the video: with 2 regions a batch, the stools' first two batches reuse their
    prefix, their last region shares a batch with the bridge's, and the video's tokens are a prefix too."""
    records = {record.id: record for record in read_annotations(COCO, MEDIA, object_only=object_only).records}
    images = {name: as_rgb_array(MEDIA / name, name) for name in ("bridge.jpg", "stools.jpg")}
    items = [
        CaptionItem(images[records[id].media], records[id].load(), records[id].media)
        for id in (201, 202, 203, 204, 205, 206, 101)
    ]
    items.append(CaptionItem(images["bridge.jpg"], {"box": [0, 0, 500, 50]}, "bridge.jpg"))
    if object_only:
        clip = load_video(MEDIA / "dog.mp4", frame_indices=[0, 3, 6, 9])
    else:
        clip = load_video(MEDIA / "dog.mp4", fps=processor.video_fps, extra_frames=[3, 6])
    dog = {"masklet": {0: {"box": [30, 10, 90, 80]}, 3: {"box": [36, 10, 96, 80]}}, "frame": 3}
    laptop = {"masklet": {6: {"box": [100, 50, 150, 88]}, 9: {"box": [100, 50, 155, 88]}}, "frame": 6}
    return items + [CaptionItem(clip, dog, "dog.mp4"), CaptionItem(clip, laptop, "dog.mp4")]


def captions_and_work(model, processor, items, strategy: str) -> tuple[list, dict[str, int]]:
    """The captions of a strategy, the patches its vision encoder read and the tokens its LLM prefilled."""
    work = {"patches": 0, "tokens": 0}

    def count(name, tensor):
        if name == "patches":
            work[name] += tensor.shape[0]
        elif tensor.shape[1] > 1:  # a prefill, not a decoding step
            work[name] += tensor.shape[0] * tensor.shape[1]

    hooks = [
        model.model.vision_model.register_forward_pre_hook(
            lambda module, args, kwargs: count("patches", kwargs["pixel_values"]), with_kwargs=True
        ),
        model.model.language_model.register_forward_pre_hook(
            lambda module, args, kwargs: count("tokens", kwargs["inputs_embeds"]), with_kwargs=True
        ),
    ]
    captioner = RegionCaptioner(
        model, processor, batch_size=2, max_new_tokens=6, strategy=strategy, output_scores=True
    )
    try:
        return captioner.caption(items), work
    finally:
        for hook in hooks:
            hook.remove()


@pytest.mark.parametrize("name", [TINY_MODEL_NAME, TINY_LITE_MODEL_NAME])
def test_shared_and_batched_captions_are_the_naive_ones(models, name):
    """Greedy ids equal exactly and every step's logits within 1e-4 (so that a near-tie cannot hide an error), for
    regions of different prompt lengths, batches holding two images, a bad region and video objects; the shared
    strategy encodes fewer patches (each image once; Lite: each image's global view once) and prefills fewer tokens
    (full model: the image tokens once per image)."""
    model, processor = models[name]
    items = engine_items(model.config.object_only, processor)
    results = {strategy: captions_and_work(model, processor, items, strategy) for strategy in STRATEGIES}
    naive = results["naive"][0]
    assert naive[5].error.startswith("RLE size [50, 50] does not match the image size (H, W) = (126, 224)")
    assert naive[7].error.startswith("box [0, 0, 500, 50] lies outside the image") and naive[7].text is None
    good = [caption for caption in naive if caption.error is None]
    assert len(good) == len(items) - 2 and len({tuple(caption.token_ids) for caption in good}) == len(good)
    assert all(caption.text and caption.scores.shape[0] == len(caption.token_ids) for caption in good)
    assert len({caption.object_tokens for caption in good}) > 1  # prompts of different lengths share batches
    for strategy in ("batched", "shared"):
        for reference, caption in zip(naive, results[strategy][0]):
            assert (caption.error, caption.text, caption.object_tokens) == (
                reference.error,
                reference.text,
                reference.object_tokens,
            )
            assert caption.token_ids == reference.token_ids
            if reference.error is None:
                torch.testing.assert_close(caption.scores, reference.scores, rtol=0, atol=1e-4)
    shared, batched = results["shared"][1], results["batched"][1]
    assert batched["patches"] == results["naive"][1]["patches"] and shared["patches"] < batched["patches"]
    if not model.config.object_only:
        assert shared["tokens"] < results["naive"][1]["tokens"] <= batched["tokens"]  # batched: also the padding


# The readers.


def test_coco_file_gives_one_record_per_annotation():
    coco = read_annotations(COCO, MEDIA, object_only=False)
    assert coco.format == "coco" and coco.coco["images"][0]["file_name"] == "bridge.jpg"
    assert [record.id for record in coco.records] == [101, 102, 201, 202, 203, 204, 205, 206, 207, 301, 401, 501]
    regions = {record.id: record for record in coco.records}
    assert regions[101].load() == {"polygon": [[100.0, 5.0, 125.0, 5.0, 130.0, 75.0, 95.0, 75.0]]}
    assert regions[102].load() == {"box": [20, 80, 130, 106]}  # bbox [x, y, w, h], no segmentation
    assert set(regions[201].load()["rle"]) == {"size", "counts"} and regions[201].image_size == (126, 224)
    with pytest.raises(BadAnnotation, match="covers no pixel"):
        regions[207].load()
    assert regions[501].error == "image_id 99 is not in 'images'" and regions[501].media is None


@pytest.mark.parametrize("object_only", [False, True], ids=["full", "lite"])
def test_training_file_gives_one_record_per_object(object_only):
    training = read_annotations(TRAINING, MEDIA, object_only=object_only)
    assert training.format == "training"
    assert [(record.id, record.kind, record.media) for record in training.records] == [
        ("0:0", "image", "bridge.jpg"),
        ("0:1", "image", "bridge.jpg"),
        ("1:0", "video", "dog.mp4"),
        ("3:0", "image", "bridge.jpg"),
        ("4:0", "video", "dog.mp4"),
    ]
    tower = training.records[0].load()["mask"]
    assert tower.shape == (106, 160) and tower[5:75, 95:130].all() and tower.sum() == 70 * 35
    dog = training.records[2].load()
    assert sorted(dog["masklet"]) == [3, 6] if object_only else (dog["frame"] == 3 and dog["mask"].shape == (90, 160))
    with pytest.raises(BadAnnotation, match="2 <region> placeholder"):
        training.records[3].load()
    with pytest.raises(BadAnnotation, match="frame 40 is not in the video"):
        training.records[4].load()


@pytest.mark.parametrize("object_only", [False, True], ids=["full", "lite"])
def test_videorefer_file_gives_one_record_per_object(object_only):
    videorefer = read_annotations(VIDEOREFER, MEDIA, object_only=object_only)
    assert videorefer.format == "videorefer"
    assert [record.id for record in videorefer.records] == ["0:0", "0:1", "1:0", "2:0", "3:0"]
    laptop = videorefer.records[1].load()
    if object_only:  # every annotated frame
        assert sorted(laptop["masklet"]) == [3, 9] and set(laptop["masklet"][9]["rle"]) == {"size", "counts"}
    else:  # the element's frame_idx
        assert laptop["frame"] == 3 and laptop["rle"]["size"] == [90, 160]
    with pytest.raises(BadAnnotation, match="no mask"):
        videorefer.records[4].load()


def test_unreadable_files_are_refused(tmp_path):
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="cannot tell the annotation format"):
        read_annotations(unknown, MEDIA, object_only=False)
    repeated = json.loads(COCO.read_text())
    repeated["annotations"][1]["id"] = 101
    (tmp_path / "repeated.json").write_text(json.dumps(repeated))
    with pytest.raises(ValueError, match="annotation id 101 is used twice"):
        read_annotations(tmp_path / "repeated.json", MEDIA, object_only=False)


# The command.


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory, models):
    """One uninterrupted run on the COCO file (with its captioned COCO copy): the reference of the restart test."""
    folder = tmp_path_factory.mktemp("coco")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(caption_command, "load_model", lambda name, seed, device: models[name])
        assert main(caption_args(COCO, folder / "captions.jsonl", "--coco-output", str(folder / "coco.json"))) == 0
    return folder


def test_every_annotation_gets_a_line_and_bad_ones_an_error(coco_run):
    lines = read_lines(coco_run / "captions.jsonl")
    assert [line["id"] for line in lines] == [101, 102, 201, 202, 203, 204, 205, 206, 207, 301, 401, 501]
    for line in lines:
        assert line["prompt"] == "Please describe <region> in detail." and line["model"] == TINY_MODEL_NAME
        if line["id"] in BAD_COCO:
            assert BAD_COCO[line["id"]] in line["error"] and line["caption"] is None
        else:
            assert "error" not in line and line["caption"] and 0 < line["object_tokens"] <= 32
    assert lines[0]["image"] == "bridge.jpg" and lines[2]["image"] == "stools.jpg"
    captioned = json.loads((coco_run / "coco.json").read_text())
    captions = {line["id"]: line["caption"] for line in lines if line["caption"]}
    assert {a["id"]: a.get("caption") for a in captioned["annotations"] if "caption" in a} == captions
    assert captioned["images"] == json.loads(COCO.read_text())["images"]


def test_killed_run_resumes_to_the_uninterrupted_bytes(coco_run, tmp_path):
    """The command runs in a subprocess, is killed (SIGKILL) once its first chunk is on disk, and is restarted."""
    output = tmp_path / "captions.jsonl"
    args = caption_args(COCO, output, "--coco-output", str(tmp_path / "coco.json"))
    process = subprocess.Popen([sys.executable, "-m", "pixelrefer_hf.cli", *args], stderr=subprocess.PIPE)
    chunks = tmp_path / "captions.jsonl.parts"
    deadline = time.monotonic() + 300
    while not list(chunks.glob("rank*.jsonl")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    written = list(chunks.glob("rank*.jsonl"))
    assert len(written) == 1 and not output.exists(), stderr.decode()[-2000:]
    assert [line["id"] for line in read_lines(written[0])] == [101, 102]
    assert main(args) == 0
    assert output.read_bytes() == (coco_run / "captions.jsonl").read_bytes()
    assert (tmp_path / "coco.json").read_bytes() == (coco_run / "coco.json").read_bytes()
    assert len(list(chunks.glob("rank*.jsonl"))) == 3  # the restart wrote only the two units left


def test_strict_stops_at_the_first_bad_annotation(tmp_path, capsys):
    assert main(caption_args(COCO, tmp_path / "captions.jsonl", "--strict")) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: annotation 207 (image 'stools.jpg'): box [500, 500, 10, 10] covers no pixel of the 126x224 image"
    ]
    assert "Traceback" not in err and not (tmp_path / "captions.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--prompt", "Compare <region> and <region>."],
            "--prompt: the prompt 'Compare <region> and <region>.' has 2",
        ),
        (
            ["--prompt", "What is <region>?"],
            "holds captions of another run: prompt 'Please describe <region> in detail.'",
        ),
        (["--format", "training"], "a .json training file holds a list of samples, got a dict"),
    ],
)
def test_wrong_options_end_with_one_error_line(coco_run, capsys, extra, message):
    assert main(caption_args(COCO, coco_run / "captions.jsonl", *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_coco_output_needs_a_coco_file(tmp_path, capsys):
    options = caption_args(TRAINING, tmp_path / "out.jsonl", "--coco-output", str(tmp_path / "coco.json"))
    assert main(options) == 2
    assert capsys.readouterr().err.startswith("error: --coco-output needs a COCO annotation file")


def test_two_processes_merge_to_the_output_of_one(tmp_path):
    """`accelerate launch` with 2 CPU processes (ACCELERATE_USE_CPU=1 with --multi_gpu: `--cpu --num_processes 2`
    starts one process in accelerate 1.15), Lite on the training file (images and a video): each process captions
    its units and process 0 merges the shards to the single process's bytes."""
    single, double = tmp_path / "single.jsonl", tmp_path / "double.jsonl"
    assert main(caption_args(TRAINING, single, "--lite", "--batch-size", "2")) == 0
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--main_process_port", "29541", "-m", "pixelrefer_hf.cli"]
    result = subprocess.run(
        [*launch, *caption_args(TRAINING, double, "--lite", "--batch-size", "2")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert double.read_bytes() == single.read_bytes()
    shards = sorted(path.name.split("-")[0] for path in (tmp_path / "double.jsonl.parts").glob("rank*.jsonl"))
    assert shards == ["rank00000", "rank00001"]
    lines = read_lines(single)
    assert [line.get("error") is None for line in lines] == [True, True, True, False, False]
    assert "video" in lines[2] and lines[2]["object_tokens"] == 2 * 32  # Lite: 32 tokens on each masklet frame
    assert all(line["model"] == TINY_LITE_MODEL_NAME for line in lines)
