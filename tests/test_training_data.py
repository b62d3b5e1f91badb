import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from pixelrefer_hf.tiny_random import build_processor
from pixelrefer_hf.training import (
    IGNORE_INDEX,
    BadSampleError,
    PixelReferTrainingDataset,
    TrainingSample,
    check_data,
    load_samples,
    sample_to_messages,
)


ROOT = Path(__file__).parents[1]
MEDIA_ROOT = ROOT / "src" / "pixelrefer_hf" / "assets"
FIXTURES = ROOT / "tests" / "fixtures" / "training"
IMAGE_FILE, VIDEO_FILE, BAD_FILE = (
    FIXTURES / name for name in ("image_samples.json", "video_samples.jsonl", "bad_samples.json")
)
IMAGE_PATH, VIDEO_PATH = str(MEDIA_ROOT / "brooklyn_bridge.jpg"), str(MEDIA_ROOT / "dog_and_laptop.mp4")
ASSISTANT_HEADER = [151644, 77091, 198]  # "<|im_start|>assistant\n"

# What each sample of bad_samples.json must be refused with (after its file and index).
BAD_SAMPLE_CASES = [
    ("missing media file", r"media file '.*missing\.jpg' does not exist; check the media root"),
    ("mask count", r'the conversation has 1 <region> placeholder\(s\) but "masks" has 2 object\(s\); give one mask'),
    ("malformed RLE", r"object 0: RLE counts .* are not a valid compressed COCO RLE string .*; pass counts as"),
    ("malformed polygon", r"object 0: polygon has an odd number of coordinates \(5\); pass x, y pairs"),
    ("mask size", r"object 0: RLE size \[100, 100\] does not match the image size \(H, W\) = \(422, 640\); pass"),
    ("height/width", r'"height"/"width" say \(H, W\) = \(480, 640\) but the image is \(422, 640\); fix them'),
    ("frame not in video", r"object 0: frame 999 is not in the video \(150 frames\); key the mask by a frame in"),
    ("polygon without size", r'object 0: a polygon needs the sample\'s "height" and "width" .*; add them'),
    ("RLE without size", r'object 0: an uncompressed RLE needs the sample\'s "height" and "width" .*; add them'),
    ("no conversations", r'the sample has no "conversations"; add its turns'),
    ("empty conversations", r'"conversations" has 0 turn\(s\) .*; give at least a "human" turn and a reply'),
    ("image type", r'"image" must be a path \(a string\) or a list of paths, got 42'),
    ("mask type", r"object 0: unknown mask annotation \{'box': .*\}; give .*COCO RLE.*polygons"),
    ("absolute path", r"media path '/etc/hosts' is absolute; .*or pass allow_outside_media_root=True"),
    ("path escape", r"media path '\.\./assets/brooklyn_bridge\.jpg' leaves the media root .* with '\.\.'"),
    ("frame files", r'"video" lists 2 files; pre-sampled frame files .* are not supported: give "video" as one'),
    ("frame key", r"object 0: frame key 'first' is not a frame index; key each mask by its frame"),
    ("tag in a reply", r'a reply has a <image> tag .*; media tags go in "human" turns only'),
    ("image and video", r'the sample has both "image" and "video"; .* split it into two'),
    ("empty mask", r"object 0: RLE is empty \(no pixel set\); pass a mask with at least one foreground pixel"),
    ("not an object", r"a sample is a JSON object \{\.\.\.\}, got a list"),
]


@pytest.fixture(scope="module")
def processors():
    return {False: build_processor(object_only=False), True: build_processor(object_only=True)}


@pytest.fixture(scope="module")
def image_samples():
    return load_samples(IMAGE_FILE)


@pytest.fixture(scope="module")
def video_samples():
    return load_samples(VIDEO_FILE)


def messages_of(sample, object_only=False, **kwargs):
    return sample_to_messages(sample, MEDIA_ROOT, object_only=object_only, **kwargs)


def without_masks(messages):
    """Messages without the regions' mask arrays (a masklet becomes its sorted frames), for comparisons."""

    def item(it):
        if it["type"] != "region":
            return it
        return {key: sorted(value) if key == "masklet" else value for key, value in it.items() if key != "mask"}

    return [{"role": m["role"], "content": [item(it) for it in m["content"]]} for m in messages]


def regions_of(messages):
    return [it for m in messages for it in m["content"] if it["type"] == "region"]


def box_mask(size, x0, y0, x1, y1):
    mask = np.zeros(size, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


TOWER, ROAD = box_mask((422, 640), 260, 60, 380, 300), box_mask((422, 640), 200, 330, 300, 422)


def text(value):
    return {"type": "text", "text": value}


# Files


def test_load_samples_reads_json_and_jsonl_and_remembers_where(tmp_path):
    samples = load_samples([IMAGE_FILE, VIDEO_FILE])
    assert len(samples) == 12
    assert [(s.source, s.index, s.line) for s in samples[7:9]] == [(str(IMAGE_FILE), 7, None), (str(VIDEO_FILE), 0, 1)]
    assert samples[8].where == f"{VIDEO_FILE}, sample 0 (line 1)"
    jsonl = tmp_path / "blank.jsonl"
    jsonl.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert [(s.data, s.index, s.line) for s in load_samples(jsonl)] == [({"a": 1}, 0, 1), ({"b": 2}, 1, 3)]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data.txt", "[]", r"data\.txt: unsupported training data file; pass \.json files .* or \.jsonl files"),
        ("data.json", '[{"a": 1},\n {"b": }]', r"data\.json: invalid JSON at line 2, column 8 .*; fix the file"),
        ("data.jsonl", '{"a": 1}\n{"b": 2\n', r"data\.jsonl: invalid JSON at line 2, column 8 .*; fix the file"),
        ("data.json", '{"conversations": []}', r"data\.json: the top level is a JSON dict, .* wrap the samples in"),
        ("data.json", None, r"data\.json: cannot read the file .*; check the path"),
    ],
)
def test_load_samples_refuses_bad_files(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_samples(path)


# Messages


def test_compressed_rle_sample(image_samples):
    messages = messages_of(image_samples[0])
    assert without_masks(messages) == [
        {
            "role": "user",
            "content": [{"type": "image", "image": IMAGE_PATH}, text("What is "), {"type": "region"}, text("?")],
        },
        {"role": "assistant", "content": [text("A stone tower of the bridge.")]},
    ]
    expected = mask_utils.decode(
        {**image_samples[0].data["masks"][0], "counts": image_samples[0].data["masks"][0]["counts"].encode()}
    )
    np.testing.assert_array_equal(regions_of(messages)[0]["mask"], expected)
    np.testing.assert_array_equal(expected, TOWER)


def test_uncompressed_rle_sample_gets_its_image_tag(image_samples):
    messages = messages_of(image_samples[1])
    assert without_masks(messages)[0]["content"] == [
        {"type": "image", "image": IMAGE_PATH},
        text("Describe "),
        {"type": "region"},
        text(" briefly."),
    ]
    np.testing.assert_array_equal(regions_of(messages)[0]["mask"], ROAD)


def test_polygon_sample(image_samples):
    mask = regions_of(messages_of(image_samples[2]))[0]["mask"]
    polygon = image_samples[2].data["masks"][0]
    np.testing.assert_array_equal(mask, mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 422, 640))))


def test_two_objects_over_several_turns(image_samples):
    messages = messages_of(image_samples[3])
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert without_masks(messages)[2]["content"] == [text("And "), {"type": "region"}, text("?")]
    masks = [region["mask"] for region in regions_of(messages)]
    assert len(masks) == 2 and (masks[0] == TOWER).all() and (masks[1] == ROAD).all()


def test_leading_reply_dropped_and_any_other_speaker_is_the_assistant(image_samples):
    messages = messages_of(image_samples[4])
    assert [(m["role"], m["content"][-1]) for m in messages] == [("user", text(".")), ("assistant", text("Tower."))]


def test_plain_two_image_and_text_only_samples(image_samples):
    assert without_masks(messages_of(image_samples[5]))[0]["content"] == [
        {"type": "image", "image": IMAGE_PATH},
        text("Where is this?"),
    ]
    two_images = messages_of(image_samples[6])
    assert [it["type"] for it in two_images[0]["content"]] == ["image", "image", "text", "region", "text"]
    assert regions_of(two_images)[0]["image_index"] == 0
    assert messages_of(image_samples[7]) == [
        {"role": "user", "content": [text("Say hello.")]},
        {"role": "assistant", "content": [text("Hello.")]},
    ]


def test_video_objects_full_model_key_frames_and_lite_masklets(video_samples):
    assert without_masks(messages_of(video_samples[0]))[0]["content"] == [
        {"type": "video", "video": VIDEO_PATH},
        text("What is "),
        {"type": "region", "frame": 130},
        text("?"),
    ]
    full, lite = messages_of(video_samples[1]), messages_of(video_samples[1], object_only=True)
    assert [r["frame"] for r in regions_of(full)] == [10, 130]
    assert [sorted(r["masklet"]) for r in regions_of(lite)] == [[10, 40, 80], [130]]
    np.testing.assert_array_equal(regions_of(full)[0]["mask"], regions_of(lite)[0]["masklet"][10])
    polygon = regions_of(messages_of(video_samples[2]))[0]
    assert polygon["frame"] == 20 and polygon["mask"].shape == (720, 1280) and polygon["mask"][40:560, 420:940].all()
    assert sorted(regions_of(messages_of(video_samples[3], object_only=True))[0]["masklet"]) == [10, 80]


def test_video_frame_folder(tmp_path):
    (tmp_path / "clip").mkdir()
    for k in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * k, dtype=np.uint8)).save(tmp_path / "clip" / f"{k:03d}.png")
    rle = mask_utils.encode(np.asfortranarray(box_mask((20, 30), 5, 5, 15, 15)))
    sample = {
        "video": ["clip"],
        "masks": [{2: {"size": [20, 30], "counts": rle["counts"].decode()}}],  # an int key, in a sample dict
        "conversations": [{"from": "human", "value": "<region>?"}, {"from": "gpt", "value": "A square."}],
    }
    region = regions_of(sample_to_messages(sample, tmp_path, object_only=False))[0]
    assert region["frame"] == 2 and region["mask"].sum() == 100
    sample["masks"] = [{"3": sample["masks"][0][2]}]
    with pytest.raises(
        BadSampleError, match=r"<samples>, sample 0: object 0: frame 3 is not in the video \(3 frames\)"
    ):
        sample_to_messages(sample, tmp_path, object_only=False)


def test_lite_strips_replies_of_samples_with_masks(image_samples):
    sample = {
        **image_samples[0].data,
        "conversations": [{"from": "human", "value": "<region>?"}, {"from": "gpt", "value": " A tower. "}],
    }
    assert messages_of(sample)[1]["content"] == [text(" A tower. ")]
    assert messages_of(sample, object_only=True)[1]["content"] == [text("A tower.")]


def test_media_outside_the_root_only_when_allowed():
    sample = {
        "image": IMAGE_PATH,
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
    }
    with pytest.raises(BadSampleError, match="is absolute; it lies outside the media root"):
        sample_to_messages(sample, FIXTURES, object_only=False)
    allowed = sample_to_messages(sample, FIXTURES, object_only=False, allow_outside_media_root=True)
    assert allowed[0]["content"][0] == {"type": "image", "image": IMAGE_PATH}
    assert messages_of(sample)[0]["content"][0] == {"type": "image", "image": IMAGE_PATH}  # absolute, inside the root


@pytest.mark.parametrize(
    "image, value, message",
    [
        (["brooklyn_bridge.jpg"] * 2, "<image>\nHi", r"the human turns have 1 <image> tag\(s\) for 2 image file\(s\)"),
        (None, "<image>\nHi", r"a turn has a <image> tag but the sample has no image; remove the tag"),
        ("brooklyn_bridge.jpg", "<video>\nHi", r"a turn has a <video> tag but the sample has no video"),
    ],
)
def test_media_tags_must_match_the_media(image, value, message):
    sample = {"image": image, "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "Hello."}]}
    with pytest.raises(BadSampleError, match=message):
        messages_of(sample)


# Labels


def expected_labels(input_ids: torch.Tensor, tokenizer, answers: list[str]) -> torch.Tensor:
    """-100 everywhere but the answers and their closing <|im_end|>, each right after an assistant header."""
    ids = input_ids[0].tolist()
    labels = [IGNORE_INDEX] * len(ids)
    starts = [i + 3 for i in range(len(ids) - 2) if ids[i : i + 3] == ASSISTANT_HEADER]
    assert len(starts) == len(answers)
    for start, answer in zip(starts, answers):
        answer_ids = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert ids[start : start + len(answer_ids)] == answer_ids
        labels[start : start + len(answer_ids)] = answer_ids
    return torch.tensor([labels])


def test_labels_of_a_single_turn_sample(processors, image_samples):
    processor = processors[False]
    item = PixelReferTrainingDataset(image_samples, processor, MEDIA_ROOT)[0]
    answer = processor.tokenizer("A stone tower of the bridge.<|im_end|>", add_special_tokens=False)["input_ids"]
    length = item["input_ids"].shape[1]
    assert item["labels"][0].tolist() == [IGNORE_INDEX] * (length - len(answer) - 1) + answer + [IGNORE_INDEX]
    assert item["input_ids"][0, -len(answer) - 4 : -len(answer) - 1].tolist() == ASSISTANT_HEADER
    assert "assistant_masks" not in item and item["labels"].shape == item["input_ids"].shape == (1, length)
    assert {"pixel_values", "region_pixel_values", "region_masks"} <= set(item)


@pytest.mark.parametrize("object_only", [False, True])
def test_labels_of_a_multi_turn_sample(processors, image_samples, object_only):
    processor = processors[object_only]
    item = PixelReferTrainingDataset(image_samples, processor, MEDIA_ROOT)[3]
    expected = expected_labels(item["input_ids"], processor.tokenizer, ["A tower.", "A road.", "The tower."])
    torch.testing.assert_close(item["labels"], expected, rtol=0, atol=0)
    supervised = item["input_ids"][item["labels"] != IGNORE_INDEX]
    assert not torch.isin(supervised, torch.tensor([processor.image_token_id, processor.region_token_id])).any()
    num_region_tokens = int((item["input_ids"] == processor.region_token_id).sum())
    assert item["region_grid_thw"].shape[0] == 2 and num_region_tokens > 0
    if object_only:
        assert num_region_tokens == 2 * processor.max_object_tokens


def test_video_items_full_and_lite(processors, video_samples):
    answers = ["The dog sniffs the laptop."]
    full = PixelReferTrainingDataset(video_samples, processors[False], MEDIA_ROOT)[1]
    lite = PixelReferTrainingDataset(video_samples, processors[True], MEDIA_ROOT)[1]
    for item, processor in ((full, processors[False]), (lite, processors[True])):
        torch.testing.assert_close(
            item["labels"], expected_labels(item["input_ids"], processor.tokenizer, answers), rtol=0, atol=0
        )
    assert "pixel_values_videos" in full and full["region_grid_thw"].shape[0] == 2
    assert "pixel_values_videos" not in lite and lite["region_grid_thw"].shape[0] == 4


def test_in_memory_samples():
    sample = {"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]}
    dataset = PixelReferTrainingDataset([sample], build_processor(), MEDIA_ROOT)
    assert dataset.samples == [TrainingSample(sample, "<samples>", 0)] and len(dataset) == 1
    assert (dataset[0]["labels"] != IGNORE_INDEX).sum() == 3  # "Hi", ".", <|im_end|>


# Bad data


def test_bad_sample_cases_match_the_fixture():
    assert len(load_samples(BAD_FILE)) == len(BAD_SAMPLE_CASES)


@pytest.mark.parametrize("index", range(len(BAD_SAMPLE_CASES)), ids=[case for case, _ in BAD_SAMPLE_CASES])
def test_bad_sample_is_refused_with_where_and_fix(index):
    sample = load_samples(BAD_FILE)[index]
    with pytest.raises(
        BadSampleError, match=re.escape(f"{BAD_FILE}, sample {index}: ") + BAD_SAMPLE_CASES[index][1]
    ) as error:
        messages_of(sample)
    assert error.value.sample is sample and isinstance(error.value, ValueError)


def test_dataset_raises_or_skips_bad_samples(processors, caplog):
    dataset = PixelReferTrainingDataset(BAD_FILE, processors[False], MEDIA_ROOT)
    with pytest.raises(BadSampleError, match=re.escape(f"{BAD_FILE}, sample 0: media file")):
        dataset[0]
    skipping = PixelReferTrainingDataset([BAD_FILE, IMAGE_FILE], processors[False], MEDIA_ROOT, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING):
        items = [skipping[i] for i in range(len(skipping))] + [skipping[1]]
    assert items[: len(BAD_SAMPLE_CASES)] == [None] * len(BAD_SAMPLE_CASES) and items[-1] is None
    assert all(item is not None for item in items[len(BAD_SAMPLE_CASES) : -1])
    assert skipping.num_bad_samples == len(BAD_SAMPLE_CASES)
    warnings = [record.getMessage() for record in caplog.records if "bad training sample" in record.getMessage()]
    assert len(warnings) == len(BAD_SAMPLE_CASES) and f"{BAD_FILE}, sample 1:" in warnings[1]


def test_check_data_reports_every_bad_sample(processors):
    errors = check_data([IMAGE_FILE, VIDEO_FILE, BAD_FILE], processors[True], MEDIA_ROOT)
    assert [(error.sample.source, error.sample.index) for error in errors] == [
        (str(BAD_FILE), i) for i in range(len(BAD_SAMPLE_CASES))
    ]
    for error, (_, message) in zip(errors, BAD_SAMPLE_CASES):
        assert re.search(message, str(error))


def test_check_data_with_the_processor(processors):
    assert check_data(IMAGE_FILE, processors[False], MEDIA_ROOT, run_processor=True) == []
    errors = check_data(
        IMAGE_FILE,
        processors[False],
        MEDIA_ROOT,
        run_processor=True,
        processor_kwargs={"truncation": True, "max_length": 64},
    )
    assert [error.sample.index for error in errors] == [0, 1, 2, 3, 4, 5, 6]
    assert re.search(
        rf"{re.escape(str(IMAGE_FILE))}, sample 0: the processor refused it: .*max_length", str(errors[0])
    )


def test_bad_sample_error_survives_pickling():
    import pickle

    error = pickle.loads(pickle.dumps(BadSampleError("what; fix", TrainingSample({}, "a.json", 3))))
    assert str(error) == "a.json, sample 3: what; fix"
