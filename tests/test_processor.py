"""PixelReferProcessor: layout of its outputs, batching, chat messages, save/load, and clear errors on bad input."""

import json

import numpy as np
import pytest
import torch
from golden import checkpoint_for, checkpoints
from transformers import AutoProcessor

import pixelrefer_hf  # noqa: F401
from pixelrefer_hf import PixelReferProcessor


CHECKPOINT = checkpoint_for("full")  # None where the golden set has no full checkpoint: the tests skip then


@pytest.fixture(scope="module")
def processor(converted):
    return AutoProcessor.from_pretrained(converted(checkpoints()["full"]))


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)


def box_mask(shape, x0, y0, x1, y1):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def test_autoprocessor_class(processor):
    assert isinstance(processor, PixelReferProcessor)
    assert processor.max_object_tokens == json.loads((CHECKPOINT / "config.json").read_text())["mask_num"]
    assert type(processor.image_processor).__name__ == "VideoLlama3ImageProcessorPil"


def test_region_expansion_and_tensors(processor, image):
    inputs = processor(
        text="<image>\nWhat is <region> next to <region>?",
        images=image,
        regions=[[{"box": [10, 10, 40, 50]}, box_mask(image.shape[:2], 60, 20, 100, 80)]],
    )
    crops = processor.object_crops(image, [{"box": [10, 10, 40, 50]}, box_mask(image.shape[:2], 60, 20, 100, 80)])
    ids = inputs["input_ids"][0]
    assert int((ids == processor.region_token_id).sum()) == sum(c.num_tokens for c in crops)
    assert int((ids == processor.image_token_id).sum()) == int(inputs["image_grid_thw"].prod())
    assert inputs["region_grid_thw"].shape == (2, 3)
    assert inputs["region_pixel_values"].shape[0] == int(inputs["region_grid_thw"].prod(-1).sum())
    assert inputs["region_masks"].shape[0] == int(inputs["region_mask_hw"].prod(-1).sum())
    # Normalised as the original does: (top, left, bottom, right) over (W - 1, H - 1), on the 90 x 120 image.
    boxes = [c.box for c in crops]
    expected = [[top / 119, left / 89, bottom / 119, right / 89] for left, top, right, bottom in boxes]
    torch.testing.assert_close(inputs["region_boxes"], torch.tensor(expected), rtol=0, atol=1e-7)
    text = processor.decode(ids)
    assert text.count("[") == 2 and "<region>" not in text


def test_box_and_mask_give_the_same_inputs(processor, image):
    by_box = processor(text="<image><region>", images=image, regions=[[{"box": [10, 10, 40, 50]}]])
    by_mask = processor(text="<image><region>", images=image, regions=[[box_mask(image.shape[:2], 10, 10, 40, 50)]])
    for key in by_box:
        assert torch.equal(by_box[key], by_mask[key]), key


def test_batch_is_left_padded(processor, image):
    inputs = processor(
        text=["<image>\n<region> and <region>?", "<image>\nWhat is <region>?"],
        images=[[image], [image[:60, :80]]],
        regions=[[{"box": [10, 10, 40, 50]}, {"box": [50, 10, 110, 80]}], [{"box": [5, 5, 30, 30]}]],
    )
    mask = inputs["attention_mask"]
    assert mask.shape[0] == 2 and mask[:, -1].all()
    shorter = int(mask.sum(-1).argmin())
    assert not mask[shorter, 0]
    assert inputs["region_grid_thw"].shape[0] == 3
    assert inputs["image_grid_thw"].shape[0] == 2


def test_chat_template_renders_regions_and_images(processor, image):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is "},
                {"type": "region", "box": [10, 10, 40, 50]},
                {"type": "text", "text": "?"},
            ],
        }
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "<|im_start|>user\n<image>\nWhat is <region>?<|im_end|>\n<|im_start|>assistant\n"
    via_chat = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    direct = processor(text=text, images=image, regions=[[{"box": [10, 10, 40, 50]}]])
    for key in direct:
        assert torch.equal(via_chat[key], direct[key]), key


def test_save_and_load_round_trip(processor, tmp_path, image):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, PixelReferProcessor)
    assert loaded.chat_template == processor.chat_template
    assert (loaded.max_object_tokens, loaded.object_only, loaded.margin_patches, loaded.max_object_patches) == (
        processor.max_object_tokens,
        processor.object_only,
        processor.margin_patches,
        processor.max_object_patches,
    )
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert dict(loaded.image_processor.size) == dict(processor.image_processor.size)
    a = processor(text="<image><region>", images=image, regions=[[{"box": [10, 10, 40, 50]}]])
    b = loaded(text="<image><region>", images=image, regions=[[{"box": [10, 10, 40, 50]}]])
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    ("text", "regions", "error", "match"),
    [
        ("<image><region> <region>", [[{"box": [1, 1, 9, 9]}]], ValueError, r"sample 0: .*2 <region>.*1 region"),
        ("<image>no placeholder", [[{"box": [1, 1, 9, 9]}]], ValueError, r"sample 0: .*0 <region>.*1 region"),
        ("<image><region>", [[np.zeros((90, 120), np.uint8)]], ValueError, r"sample 0, region 0: .*empty"),
        ("<image><region>", [[np.ones((10, 10), np.uint8)]], ValueError, r"sample 0, region 0: .*shape"),
        ("<image><region>", [[{"box": [100, 10, 130, 50]}]], ValueError, r"sample 0, region 0: .*outside"),
        ("<image><region>", [[{"box": [40, 10, 20, 50]}]], ValueError, r"sample 0, region 0: .*x1 <= x0"),
        ("<image><region>", [[{"rle": {"size": [90, 120], "counts": "!!bad"}}]], ValueError, r"sample 0, region 0"),
        ("<image><region>", [[{"polygon": [1, 2, 3]}]], ValueError, r"sample 0, region 0"),
        ("<image><region>", [[{"circle": [5, 5, 3]}]], TypeError, r"sample 0, region 0"),
        ("<image><region>", [["not a region"]], TypeError, r"sample 0, region 0"),
    ],
)
def test_bad_regions_raise_clear_errors(processor, image, text, regions, error, match):
    with pytest.raises(error, match=match):
        processor(text=text, images=image, regions=regions)


def test_region_without_image(processor):
    with pytest.raises(ValueError, match=r"sample 0, region 0: .*need an image"):
        processor(text="<region>", regions=[[{"box": [1, 1, 5, 5]}]])


def test_image_placeholder_count_mismatch(processor, image):
    with pytest.raises(ValueError, match=r"sample 0: .*0 <image>.*1 image"):
        processor(text="<region>", images=image, regions=[[{"box": [1, 1, 5, 5]}]])


def test_regions_not_one_list_per_sample(processor, image):
    with pytest.raises(ValueError, match="one list per sample"):
        processor(
            text=["<image><region>", "<image><region>"], images=[[image], [image]], regions=[{"box": [1, 1, 5, 5]}]
        )


def test_second_sample_is_named(processor, image):
    with pytest.raises(ValueError, match=r"sample 1, region 0: .*x1 <= x0"):
        processor(
            text=["<image><region>", "<image><region>"],
            images=[[image], [image]],
            regions=[[{"box": [1, 1, 5, 5]}], [{"box": [9, 1, 5, 5]}]],
        )


def test_unknown_chat_item_type(processor, image):
    messages = [{"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]}]
    with pytest.raises(TypeError, match="Unknown content type 'audio'"):
        processor.apply_chat_template(messages, tokenize=True)


def test_several_images_need_image_index(processor, image):
    with pytest.raises(ValueError, match=r"sample 0, region 0: .*image_index"):
        processor(text="<image><image><region>", images=[[image, image]], regions=[[{"box": [1, 1, 5, 5]}]])
    inputs = processor(
        text="<image><image><region>",
        images=[[image, image[:50]]],
        regions=[[{"box": [1, 1, 5, 40], "image_index": 1}]],
    )
    (crop,) = processor.object_crops(image[:50], [{"box": [1, 1, 5, 40]}])
    left, top, right, bottom = crop.box
    # The box is normalised by the size of the second image (50 x 120), not the first (90 x 120).
    expected = torch.tensor([[top / 119, left / 49, bottom / 119, right / 49]])
    torch.testing.assert_close(inputs["region_boxes"], expected, rtol=0, atol=1e-7)


def test_image_from_path_equals_array(processor, image, tmp_path):
    from PIL import Image

    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    from_path = processor(text="<image><region>", images=str(path), regions=[[{"box": [10, 10, 40, 50]}]])
    from_array = processor(text="<image><region>", images=image, regions=[[{"box": [10, 10, 40, 50]}]])
    for key in from_array:
        assert torch.equal(from_path[key], from_array[key]), key


def test_error_names_the_right_region(processor, image):
    with pytest.raises(ValueError, match=r"sample 0, region 1: .*outside"):
        processor(
            text="<image><region> <region>",
            images=image,
            regions=[[{"box": [1, 1, 9, 9]}, {"box": [100, 10, 130, 50]}]],
        )


def two_turn_chat(image):
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": "What is "},
                {"type": "region", "box": [10, 10, 50, 50]},
                {"type": "text", "text": "?"},
            ],
        },
        {"role": "assistant", "content": "A small dog."},
        {"role": "user", "content": "And its colour?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Brown, mostly."}]},
    ]


def test_assistant_tokens_mask_marks_what_the_original_supervises(processor, image):
    """Only the assistant turns' text and their closing <|im_end|>; not `<|im_start|>assistant\\n`, the newline after
    <|im_end|>, user turns, image or <REGION> tokens. Two samples of different lengths (left padding)."""
    chats = [two_turn_chat(image), two_turn_chat(image)[:2]]
    out = processor.apply_chat_template(chats, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    plain = processor.apply_chat_template(chats, tokenize=True, return_dict=True)
    assert torch.equal(out["input_ids"], plain["input_ids"]) and set(out) - set(plain) == {"assistant_masks"}
    tokenizer = processor.tokenizer
    for ids, mask, answers in zip(
        out["input_ids"], out["assistant_masks"], (["A small dog.", "Brown, mostly."], ["A small dog."])
    ):
        expected = [token for answer in answers for token in tokenizer(answer + "<|im_end|>")["input_ids"]]
        assert ids[mask.bool()].tolist() == expected
    with pytest.raises(ValueError, match="needs tokenize=True and return_dict=True"):
        processor.apply_chat_template(chats, return_assistant_tokens_mask=True)


def test_a_saved_and_reloaded_processor_still_pads_left(tmp_path, image):
    """The tokenizer's `padding_side` attribute is not saved; the processor pads left for generation anyway."""
    from pixelrefer_hf.tiny_random import build_processor

    build_processor().save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    inputs = reloaded(
        text=["<image>\nWhat is <region>?", "Hi"], images=[[image], []], regions=[[{"box": [5, 5, 30, 30]}], []]
    )
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][:, -1].all()
    right = reloaded(text=["a b c d", "a"], padding_side="right")
    assert right["attention_mask"][1, -1] == 0
