"""PixelRefer model behaviour on a converted golden checkpoint: Auto classes, save/load, batching, KV cache,
deterministic object tokens and consistency checks."""

from functools import cache

import numpy as np
import pytest
import torch
from golden import checkpoints, first_case, need_case, variant_params
from samples import image_messages
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

import pixelrefer_hf  # noqa: F401
from pixelrefer_hf import PixelReferConfig, PixelReferForConditionalGeneration, PixelReferModel
from pixelrefer_hf.modeling.object_tokenizer import evenly_spaced_start


# The first image case of each variant (None where the golden set has none; the fixtures below skip then), and any
# image case: the tests take its image and masks, on each variant's checkpoint.
CASES = {variant: first_case(variant, "image") for variant in ("full", "lite")}
CASE = first_case(modal="image")


@cache
def _load(folder):
    return AutoModelForImageTextToText.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module", params=variant_params())
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def folder(converted, variant):
    return converted(checkpoints()[variant])


@pytest.fixture(scope="module")
def model_and_processor(folder):
    return _load(folder)


@pytest.fixture(scope="module")
def image_case():
    return need_case(modal="image")


@pytest.fixture(scope="module")
def two_samples(image_case):
    image = image_case.image
    height, width = image.shape[:2]
    masks = list(image_case.arrays["masks"])
    other = np.ascontiguousarray(image[::-1, ::-1][: height * 3 // 4, : width * 3 // 4])
    box = [width // 16, height // 10, width // 3, height * 2 // 3]
    first = image_messages(image, [{"mask": masks[0]}, {"box": box}], "Compare")
    second = image_messages(other, [{"box": [width // 10, height // 6, width // 3, height // 2]}], "What is")
    return first, second


def test_auto_classes(folder, model_and_processor, variant):
    model, processor = model_and_processor
    assert isinstance(AutoConfig.from_pretrained(folder), PixelReferConfig)
    assert model.config.object_only == processor.object_only == (variant == "lite")
    assert (model.model.object_infusion is not None) == (variant == "lite")
    assert isinstance(model, PixelReferForConditionalGeneration)
    assert isinstance(AutoModel.from_pretrained(folder), PixelReferModel)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


def test_save_and_load_round_trip(model_and_processor, two_samples, tmp_path):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[0], add_generation_prompt=True, tokenize=True, return_dict=True)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def greedy(model, inputs, steps=6):
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
    return out[:, inputs["input_ids"].shape[1] :]


def test_batch_equals_single_samples(model_and_processor, two_samples):
    model, processor = model_and_processor
    singles = [
        greedy(model, processor.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True))[0]
        for m in two_samples
    ]
    batch = processor.apply_chat_template(
        list(two_samples), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert batch["region_grid_thw"].shape[0] == 3
    if processor.object_only:
        assert "pixel_values" not in batch
        assert batch["region_view_ids"].tolist() == [0, 0, 0]  # each region's views, indexed within its sample
    batched = greedy(model, batch)
    for single, row in zip(singles, batched):
        assert torch.equal(single, row)


def test_object_tokens_computed_once_per_generate(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[0], add_generation_prompt=True, tokenize=True, return_dict=True)
    calls = []
    hook = model.model.object_tokenizer.register_forward_hook(lambda *args: calls.append(1))
    try:
        greedy(model, inputs, steps=5)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_default_clustering_is_deterministic(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[0], add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        runs = [model(**inputs).logits for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    # The rule: the start cells are spread evenly over the region's masked cells, in row-major order.
    assert evenly_spaced_start(torch.tensor([64, 40]), 4).tolist() == [[0, 16, 32, 48], [0, 10, 20, 30]]


def test_explicit_start_changes_tokens(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[0], add_generation_prompt=True, tokenize=True, return_dict=True)
    init = torch.arange(model.config.max_object_tokens).flip(0).repeat(2, 1)
    with torch.no_grad():
        default = model(**inputs).logits
        reversed_start = model(**inputs, region_kmeans_init=init).logits
    assert not torch.equal(default, reversed_start)


def test_region_token_count_mismatch_is_an_error(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[1], add_generation_prompt=True, tokenize=True, return_dict=True)
    ids = inputs["input_ids"].clone()
    ids[ids == processor.region_token_id] = processor.tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(ValueError, match="<REGION> tokens"):
        model(**{**inputs, "input_ids": ids})


def test_lite_prompt_has_no_image_tokens(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[0], add_generation_prompt=True, tokenize=True, return_dict=True)
    num_image_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    num_region_tokens = int((inputs["input_ids"] == processor.region_token_id).sum())
    if processor.object_only:
        assert num_image_tokens == 0 and num_region_tokens == 2 * model.config.max_object_tokens
    else:
        assert num_image_tokens == int(inputs["image_grid_thw"].prod())


def test_crop_resized_by_the_image_processor(model_and_processor, image_case):
    """A crop over the pixel budget is resized by the image processor; its features are resized to the mask grid."""
    model, processor = model_and_processor
    image = image_case.image
    size = dict(processor.image_processor.size)
    processor.image_processor.size = {**size, "longest_edge": 14 * 14 * 40}
    try:
        box = [0, 0, image.shape[1] - 6, image.shape[0] - 6]  # nearly the whole image, whatever its size
        inputs = processor(text="<image><region>", images=image, regions=[[{"box": box}]])
    finally:
        processor.image_processor.size = size
    crop_hw, mask_hw = inputs["region_grid_thw"][0, 1:].tolist(), inputs["region_mask_hw"][0].tolist()
    assert crop_hw != mask_hw
    tokenizer = model.model.object_tokenizer
    with torch.no_grad():
        grid = inputs["region_grid_thw"]
        (features,) = model.model.encode_vision([(inputs["region_pixel_values"], grid, torch.ones_like(grid[:, 0]))])
        masked = tokenizer.masked_cells(
            features,
            grid[:, 1:],
            inputs["region_masks"],
            inputs["region_mask_hw"],
            inputs["region_boxes"],
        )
        # The original's order (MaskExtractor.forward, then MaskPooling): embed the box positions on the CROP grid
        # (generate_position_tensor with the (top, left, bottom, right) box it passes as (x0, y0, x1, y1)), add them
        # to the features, then resize features + positions bilinearly to the mask grid.
        (crop,) = processor.object_crops(image, [{"box": box}])
        (h, w), (x0, y0, x1, y1), (raw_h, raw_w) = crop_hw, crop.box, crop.image_size
        top, left, bottom, right = y0, x0, y1, x1
        first = ((torch.arange(w) / w).repeat(h, 1) * (bottom - top) + top) / (raw_w - 1)
        second = ((torch.arange(h) / h)[:, None].repeat(1, w) * (right - left) + left) / (raw_h - 1)
        embedded = features.view(h, w, -1) + tokenizer.box_position_embedding(torch.stack([first, second], -1))
        resized = torch.nn.functional.interpolate(
            embedded.permute(2, 0, 1)[None], size=tuple(mask_hw), mode="bilinear", align_corners=False
        )[0].permute(1, 2, 0)
        expected = resized.reshape(-1, resized.shape[-1])[inputs["region_masks"] > 0]
        torch.testing.assert_close(masked.cells[0][masked.valid[0]], expected, rtol=0, atol=1e-6)
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


def test_labels_give_a_loss_that_trains(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[1], add_generation_prompt=True, tokenize=True, return_dict=True)
    labels = inputs["input_ids"].clone()
    labels[:, :-4] = -100
    model.train()
    try:
        out = model(**inputs, labels=labels)
        out.loss.backward()
    finally:
        model.eval()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert torch.isfinite(out.loss)
    assert any("object_tokenizer" in name for name in grads)
    assert any("vision_model" in name for name in grads)
    model.zero_grad(set_to_none=True)


def test_one_vision_call_for_images_and_all_crops(model_and_processor, two_samples):
    model, processor = model_and_processor
    batch = processor.apply_chat_template(
        list(two_samples), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    calls = []
    hook = model.model.vision_model.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        hook.remove()
    assert len(calls) == 1
    grids = calls[0]["grid_thw"]
    expected = len(batch["region_grid_thw"]) + (
        len(batch["region_context_grid_thw"]) if processor.object_only else len(batch["image_grid_thw"])
    )
    assert len(grids) == expected


def test_logits_to_keep_matches_full_logits(model_and_processor, two_samples):
    model, processor = model_and_processor
    inputs = processor.apply_chat_template(two_samples[1], add_generation_prompt=True, tokenize=True, return_dict=True)
    with torch.no_grad():
        full = model(**inputs).logits
        last = model(**inputs, logits_to_keep=1).logits
    assert last.shape[1] == 1
    torch.testing.assert_close(last[:, -1], full[:, -1], rtol=0, atol=1e-6)


def test_lite_model_refuses_inputs_without_context_views(two_samples, converted):
    model, processor = _load(converted(checkpoints()["lite"]))
    inputs = processor.apply_chat_template(two_samples[1], add_generation_prompt=True, tokenize=True, return_dict=True)
    del inputs["region_context_pixel_values"]
    with pytest.raises(ValueError, match="object_only=True"):
        model(**inputs)
