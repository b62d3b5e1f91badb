"""Every generation path transformers has gives the answer of a plain forward pass, with regions present: beam
search, `num_return_sequences`, sampling, chunked prefill and the static cache, for both variants, on a batch of two
samples with different region counts (one region with fewer masked cells than `mask_num`), for images and videos.

Logits are compared, not only greedy ids, which random weights can make insensitive: every generate copy against
the plain forward of the same batch within 1e-5 (max abs), and a sample in a padded batch against the sample alone
within 1e-4 (the padded batch runs other matrix shapes; a region mix-up moves logits by 1e-2 and more).
"""

import numpy as np
import pytest
import torch
from samples import PHOTO, image_messages, shrunk_clip

from pixelrefer_hf.tiny_random import build_tiny_random


ATOL = 1e-5
BATCH_ATOL = 1e-4
THIN_BOX = [100, 100, 101, 116]  # 1 x 16 pixels: 23 masked cells on its crop grid, fewer than mask_num = 32


@pytest.fixture(scope="module", params=["full", "lite"])
def tiny(request):
    return build_tiny_random(object_only=request.param == "lite")


@pytest.fixture(scope="module")
def small_clip():
    return shrunk_clip(160, 90)


def two_image_samples():
    other = np.ascontiguousarray(PHOTO[::-1, ::-1][:300, :400])
    first = image_messages(PHOTO, [{"box": [425, 20, 472, 225]}, {"box": THIN_BOX}], "Compare")
    second = image_messages(other, [{"box": [40, 60, 200, 250]}], "What is")
    return [first, second]


def video_and_image_samples(clip):
    video = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": clip},
                {"type": "text", "text": "What does "},
                {"type": "region", "masklet": {14: {"box": [50, 0, 120, 70]}, 72: {"box": [45, 0, 115, 75]}}},
                {"type": "text", "text": " do?"},
            ],
        }
    ]
    return [video, image_messages(PHOTO, [{"box": THIN_BOX}, {"box": [40, 60, 200, 250]}], "Describe")]


def batch_inputs(processor, conversations):
    return processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True, return_dict=True)


def first_step_logits(model, inputs, **generate_kwargs):
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=2, output_logits=True, return_dict_in_generate=True, **generate_kwargs
        )
    return out.logits[0]


def reference_last_logits(model, inputs):
    """Last-position logits of a plain forward, with the positions `generate` derives from the attention mask (so
    that a left-padded sample has the positions it has alone)."""
    position_ids = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(**inputs, position_ids=position_ids).logits[:, -1]


GENERATION_MODES = {
    "beams": dict(num_beams=2, num_return_sequences=2, do_sample=False),
    "sampling": dict(do_sample=True, num_return_sequences=2, top_k=5),
    "chunked_prefill": dict(do_sample=False, prefill_chunk_size=7),
    "static_cache": dict(do_sample=False, cache_implementation="static"),
}


@pytest.mark.parametrize("mode", GENERATION_MODES)
def test_generation_modes_match_a_plain_forward(tiny, mode):
    model, processor = tiny
    inputs = batch_inputs(processor, two_image_samples())
    reference = reference_last_logits(model, inputs)
    kwargs = GENERATION_MODES[mode]
    logits = first_step_logits(model, inputs, **kwargs)
    copies = len(logits) // len(reference)
    torch.testing.assert_close(logits, reference.repeat_interleave(copies, dim=0), rtol=0, atol=ATOL)


@pytest.mark.parametrize("mode", ["beams", "chunked_prefill"])
def test_generation_modes_with_a_video_sample(tiny, small_clip, mode):
    model, processor = tiny
    inputs = batch_inputs(processor, video_and_image_samples(small_clip))
    reference = reference_last_logits(model, inputs)
    logits = first_step_logits(model, inputs, **GENERATION_MODES[mode])
    copies = len(logits) // len(reference)
    torch.testing.assert_close(logits, reference.repeat_interleave(copies, dim=0), rtol=0, atol=ATOL)


def test_batch_matches_each_sample_alone(tiny, small_clip):
    model, processor = tiny
    for conversations in (two_image_samples(), video_and_image_samples(small_clip)):
        batched = reference_last_logits(model, batch_inputs(processor, conversations))
        for row, conversation in zip(batched, conversations):
            alone = reference_last_logits(model, batch_inputs(processor, [conversation]))[0]
            torch.testing.assert_close(row, alone, rtol=0, atol=BATCH_ATOL)


def test_chunk_boundaries_inside_object_tokens(tiny):
    """Chunks of 5 tokens cut through every run of <REGION> placeholders; each chunk gets its own object tokens."""
    model, processor = tiny
    inputs = batch_inputs(processor, two_image_samples()[:1])
    region_positions = torch.nonzero(inputs["input_ids"][0] == processor.region_token_id)[:, 0]
    assert (region_positions // 5).unique().numel() > 2
    logits = first_step_logits(model, inputs, do_sample=False, prefill_chunk_size=5)
    torch.testing.assert_close(logits, reference_last_logits(model, inputs), rtol=0, atol=ATOL)


def test_model_output_carries_one_row_per_object_token(tiny):
    model, processor = tiny
    inputs = batch_inputs(processor, two_image_samples())
    with torch.no_grad():
        out = model(**inputs)
    num_placeholders = int((inputs["input_ids"] == processor.region_token_id).sum())
    assert out.region_hidden_states.shape == (num_placeholders, model.config.text_config.hidden_size)
    embeddings = model.get_input_embeddings()(inputs["input_ids"])
    assert not torch.allclose(out.region_hidden_states, embeddings[inputs["input_ids"] == processor.region_token_id])


def test_region_features_are_what_the_llm_receives(tiny):
    """`get_region_features` (its own vision call) gives per region the rows the forward writes into the `<REGION>`
    positions of the LLM input, in placeholder order; Lite finds each region's sample from the placeholders."""
    model, processor = tiny
    inputs = batch_inputs(processor, two_image_samples())
    region_inputs = {name: inputs[name] for name in inputs if name.startswith("region_")}
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            features = model.get_region_features(**region_inputs, input_ids=inputs["input_ids"])
            model(**inputs)
    finally:
        hook.remove()
    per_region = [len(tokens) for tokens in features.pooler_output]
    assert len(per_region) == len(inputs["region_grid_thw"])
    placeholders = inputs["input_ids"] == processor.region_token_id
    assert sum(per_region) == int(placeholders.sum())
    received = captured["embeds"][placeholders]
    torch.testing.assert_close(torch.cat(features.pooler_output), received, rtol=0, atol=1e-6)


def test_model_refuses_a_region_without_masked_cells(tiny):
    model, processor = tiny
    inputs = batch_inputs(processor, two_image_samples())
    first_cells = int(inputs["region_mask_hw"][0].prod())
    inputs["region_masks"][:first_cells] = 0
    with pytest.raises(ValueError, match=r"Regions \[0\] have no cell on their mask grid"):
        model(**inputs)
