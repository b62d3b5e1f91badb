"""Length-grouped batched generation: batches of similar prompt lengths, answers in input order, each equal to the
conversation generated alone (ids, and the last prompt position's logits of the joined batch)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelrefer_hf.batched_generation import collate_encoded, generate_batched, length_grouped_batches
from pixelrefer_hf.tiny_random import build_tiny_random


PHOTO = Path(__file__).parents[1] / "src" / "pixelrefer_hf" / "assets" / "brooklyn_bridge.jpg"
LOGITS_ATOL = 1e-4


def test_batches_hold_every_index_once_longest_first():
    lengths = [5, 90, 12, 90, 7, 40, 3]
    batches = length_grouped_batches(lengths, 3, max_padding=None)
    assert batches == [[1, 3, 5], [2, 4, 0], [6]]  # longest first, equal lengths in input order
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        length_grouped_batches(lengths, 0)


def test_a_batch_closes_before_its_padding_exceeds_the_bound():
    lengths = [1000, 990, 400, 380, 100, 10]
    batches = length_grouped_batches(lengths, 4, max_padding=0.25)
    assert batches == [[0, 1], [2, 3], [4], [5]]
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= 1.25 * sum(lengths[i] for i in batch)
    assert length_grouped_batches([7] * 5, 2) == [[0, 1], [2, 3], [4]]


def conversations() -> list[list[dict]]:
    """Prompts of very different lengths: images of several sizes with one to three regions, and a text-only one."""
    photo = Image.open(PHOTO).convert("RGB")
    rng = np.random.default_rng(0)
    result = []
    for scale, count in [(0.3, 1), (1.0, 3), (0.5, 2), (0.8, 1), (0.4, 3)]:
        image = photo.resize((int(photo.width * scale), int(photo.height * scale)))
        content = [{"type": "image", "image": image}, {"type": "text", "text": "Compare"}]
        for _ in range(count):
            x0, y0 = rng.integers(0, image.width // 2), rng.integers(0, image.height // 2)
            content += [{"type": "region", "box": [int(x0), int(y0), int(x0) + 30, int(y0) + 25]}, {"type": "text"}]
            content[-1]["text"] = " and"
        result.append([{"role": "user", "content": content}])
    result.insert(2, [{"role": "user", "content": [{"type": "text", "text": "Say something."}]}])
    return result


@pytest.fixture(scope="module", params=["full", "lite"])
def model_and_processor(request):
    return build_tiny_random(object_only=request.param == "lite")


def test_answers_in_input_order_equal_each_alone(model_and_processor):
    model, processor = model_and_processor
    chats = conversations()
    batched = generate_batched(model, processor, chats, batch_size=3, max_new_tokens=5, do_sample=False)
    alone = generate_batched(model, processor, chats, batch_size=1, max_new_tokens=5, do_sample=False)
    assert batched == alone
    assert len(set(alone)) > 1  # the answers differ, so a reordering would show


def test_a_joined_batch_gives_each_sample_its_logits(model_and_processor):
    model, processor = model_and_processor
    samples = [
        processor.apply_chat_template([chat], add_generation_prompt=True, tokenize=True, return_dict=True)
        for chat in conversations()
    ]
    lengths = [sample["input_ids"].shape[1] for sample in samples]
    assert max(lengths) > 2 * min(lengths)
    batch = collate_encoded(samples, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        joined = model(**batch).logits[:, -1]
        for row, sample in enumerate(samples):
            torch.testing.assert_close(joined[row], model(**sample).logits[0, -1], atol=LOGITS_ATOL, rtol=0)
