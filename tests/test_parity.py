"""Parity of PixelRefer (full, Vision-Object) and PixelRefer-Lite (Object-Only) with the original release, stage by
stage, for images and videos (frame sampling, token compression, masks on unsampled frames, Lite masklets).

Cases are discovered from the golden set in `$PIXELREFER_GOLDEN_DIR`. Tolerances (float32, CPU): preprocessing
(crops, masks, context views, pixel values, ids, counts, boxes) exact, except Lite's fractional crop masks
(`cv2.resize` INTER_LINEAR of a float32 mask, which can differ by a float32 rounding step between OpenCV versions):
<= 1e-6 abs, with `mask > 0` (all the model uses of them) exact; the full model's uint8 crop masks are exact; vision
and object features <= 1e-5; k-means centroids from the original's recorded random start <= 1e-5; object infusion,
embeddings, hidden states and logits <= 1e-4; argmax and greedy ids exact.
"""

from functools import cache

import numpy as np
import pytest
import torch
from golden import discover
from transformers import AutoModelForImageTextToText, AutoProcessor

import pixelrefer_hf  # noqa: F401
from pixelrefer_hf.modeling.object_tokenizer import batched_kmeans, box_position_grid


CASES = discover()
FEATURE_ATOL = 1e-5
KMEANS_ATOL = 1e-5
OUTPUT_ATOL = 1e-4
LITE_CROP_MASK_ATOL = 1e-6


def test_golden_set_has_cases():
    assert CASES, "the golden set has no case"
    assert {case.variant for case in CASES} <= {"full", "lite"}
    assert {case.modal for case in CASES} <= {"image", "video"}


@cache
def _load(folder):
    model = AutoModelForImageTextToText.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoProcessor.from_pretrained(folder)


@pytest.fixture(params=CASES, ids=lambda c: c.name)
def case(request):
    return request.param


@pytest.fixture
def model_and_inputs(case, converted):
    model, processor = _load(converted(case.checkpoint))
    inputs = processor.apply_chat_template(
        case.messages(), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    init = torch.from_numpy(case.kmeans_init(model.config.max_object_tokens))
    return model, processor, inputs, init


def assert_close(actual, expected, atol, what):
    actual = torch.as_tensor(actual).detach().float()
    expected = torch.as_tensor(np.asarray(expected)).float()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


def region_images(case):
    """The image (or video frame) each golden mask is drawn on."""
    if case.modal == "image":
        return [case.image] * case.num_regions
    frame_ids = case.manifest["info"]["additional_frame_ids"]
    return [case.clip.frame(frame_ids[i]) for i in case.arrays["mask_ids"]]


def test_object_crops(case, model_and_inputs):
    _, processor, _, _ = model_and_inputs
    golden = case.arrays
    crops = [processor.object_crops(image, [mask])[0] for image, mask in zip(region_images(case), golden["masks"])]
    for i, crop in enumerate(crops):
        np.testing.assert_array_equal(crop.image, golden[f"crop_image_{i}"], err_msg=f"crop_image_{i}")
        if case.variant == "lite":
            # Fractional (cv2 INTER_LINEAR of a float32 mask): OpenCV versions may round differently; only > 0 is used.
            np.testing.assert_allclose(
                crop.mask, golden[f"crop_mask_{i}"], rtol=0, atol=LITE_CROP_MASK_ATOL, err_msg=f"crop_mask_{i}"
            )
            np.testing.assert_array_equal(crop.mask > 0, golden[f"crop_mask_{i}"] > 0, err_msg=f"crop_mask_{i} > 0")
        else:
            np.testing.assert_array_equal(crop.mask, golden[f"crop_mask_{i}"], err_msg=f"crop_mask_{i}")
        top, left, bottom, right = golden["box_bbox_tlbr"][i]
        assert crop.box == (left, top, right, bottom)
        assert crop.image_size == tuple(golden["box_raw_hw"][i])
    assert [c.num_tokens for c in crops] == golden["mask_nums"].tolist()


def lite_view_index(case):
    """For each mask, the index under which the golden set stored its (cached) global/local view."""
    return case.manifest["info"]["lite_per_mask_source_index"]["lite_raw"]


def test_processor_outputs(case, model_and_inputs):
    _, processor, inputs, _ = model_and_inputs
    golden = case.arrays
    # Video frames use <|video_pad|> placeholders where the original uses <image>, and the original's ids are those
    # before token compression: map and compress them to compare.
    ids = inputs["input_ids"].clone()
    ids[ids == processor.video_token_id] = processor.image_token_id
    kept = golden.get("text_keep_mask", np.ones(golden["input_ids"].shape[1], dtype=bool))
    np.testing.assert_array_equal(ids.numpy(), golden["input_ids"][:, kept])
    np.testing.assert_array_equal(inputs["attention_mask"].numpy(), golden["attention_mask"][:, kept])
    if case.variant == "full" and case.modal == "image":
        np.testing.assert_array_equal(inputs["pixel_values"].numpy(), golden["main_pixel_values_0"])
        np.testing.assert_array_equal(inputs["image_grid_thw"].numpy(), golden["main_grid_thw_0"])
    elif case.variant == "full":
        num_frames, height, width = inputs["video_grid_thw"][0].tolist()
        frames = inputs["pixel_values_videos"].split(height * width)
        assert num_frames == len(frames) == len(case.clip.frames)
        for k, frame in enumerate(frames):
            np.testing.assert_array_equal(frame.numpy(), golden[f"main_pixel_values_{k}"])
            assert [1, height, width] == golden[f"main_grid_thw_{k}"][0].tolist()
        image_positions = golden["input_ids"][0] == processor.image_token_id
        np.testing.assert_array_equal(inputs["video_compression_mask"].numpy(), kept[image_positions])
    else:
        assert "pixel_values" not in inputs and "pixel_values_videos" not in inputs
        # Each context image has its global view, then its local view.
        views = inputs["region_context_pixel_values"].split(inputs["region_context_grid_thw"].prod(-1).tolist())
        for offset, name in ((0, "raw"), (1, "local")):
            for i, source in enumerate(lite_view_index(case)):
                own = views[2 * int(inputs["region_view_ids"][i]) + offset]
                np.testing.assert_array_equal(own.numpy(), golden[f"lite_{name}_pixel_values_{source}"])
    crop_pixels = inputs["region_pixel_values"].split(inputs["region_grid_thw"].prod(-1).tolist())
    for i, pixels in enumerate(crop_pixels):
        np.testing.assert_array_equal(pixels.numpy(), golden[f"crop_pixel_values_{i}"])
        np.testing.assert_array_equal(inputs["region_grid_thw"][i : i + 1].numpy(), golden[f"crop_grid_thw_{i}"])


def ones_like_grid(grid):
    return torch.ones_like(grid[:, 0])


def test_vision_and_object_tokens(case, model_and_inputs):
    model, _, inputs, init = model_and_inputs
    golden = case.arrays
    inner = model.model
    lite = case.variant == "lite"
    groups = [(inputs["region_pixel_values"], inputs["region_grid_thw"], ones_like_grid(inputs["region_grid_thw"]))]
    if lite:
        grid = inputs["region_context_grid_thw"]
        groups.append((inputs["region_context_pixel_values"], grid, ones_like_grid(grid)))
    elif case.modal == "image":
        groups.insert(0, (inputs["pixel_values"], inputs["image_grid_thw"], inputs["image_merge_sizes"]))
    else:
        groups.insert(0, (inputs["pixel_values_videos"], inputs["video_grid_thw"], inputs["video_merge_sizes"]))
    with torch.no_grad():
        features = inner.encode_vision(groups)
        if lite:
            crop_features, context_features = features
            per_view = context_features.split(inputs["region_context_grid_thw"].prod(-1).tolist())
            for offset, name in ((0, "raw"), (1, "local")):
                for i, source in enumerate(lite_view_index(case)):
                    expected = golden[f"lite_{name}_features_grid_{source}"]
                    actual = per_view[2 * int(inputs["region_view_ids"][i]) + offset].view(expected.shape)
                    assert_close(actual, expected, FEATURE_ATOL, f"lite_{name}_features_grid_{source}")
        else:
            media_features, crop_features = features
            # Video features are compared after the 2x2 merge (the original's spatial_downsampling).
            expected = golden.get("spatial_downsampling_out_0", golden["main_vision_features"])
            assert_close(media_features, expected, FEATURE_ATOL, "vision features")
            assert_close(inner.projector(media_features), golden["mm_features_projected"], OUTPUT_ATOL, "projected")
        grids = inputs["region_grid_thw"][:, 1:]
        for i, crop in enumerate(crop_features.split(grids.prod(-1).tolist())):
            expected = golden[f"crop_features_grid_{i}"]
            assert_close(crop.view(expected.shape), expected, FEATURE_ATOL, f"crop_features_grid_{i}")

        tokenizer = inner.object_tokenizer
        # The original embeds the box positions on the crop's patch grid (before any resize to the mask grid).
        positions = box_position_grid(grids, inputs["region_boxes"])
        pos_emb = tokenizer.box_position_embedding(positions).split(grids.prod(-1).tolist())
        for i, emb in enumerate(pos_emb):
            assert_close(emb.view(golden[f"pos_emb_{i}"].shape), golden[f"pos_emb_{i}"], FEATURE_ATOL, f"pos_emb_{i}")

        args = (
            crop_features,
            grids,
            inputs["region_masks"],
            inputs["region_mask_hw"],
            inputs["region_boxes"],
        )
        masked = tokenizer.masked_cells(*args)
        cells, num_cells = masked.cells, masked.counts
        pooled = tokenizer.pool(masked, initial_indices=init)
        for i in range(case.num_regions):
            expected = golden.get(f"kmeans_input_tokens_{i}", golden[f"pool_output_{i}"])
            assert num_cells[i].item() == len(expected)
            assert_close(cells[i, : len(expected)], expected, FEATURE_ATOL, f"kmeans_input_tokens_{i}")
            assert_close(
                pooled.tokens[i, : pooled.counts[i]], golden[f"pool_output_{i}"], KMEANS_ATOL, f"pool_output_{i}"
            )
        if lite:
            assert_close(pooled.tokens, golden["oci_local_query_0"], KMEANS_ATOL, "oci_local_query")
            infusion = inner.object_infusion
            view_ids = inputs["region_view_ids"]
            keys = {
                view: torch.stack([per_view[2 * int(v) + offset] for v in view_ids])
                for view, offset in (("global", 0), ("local", 1))
            }
            local_out = (
                pooled.tokens
                + infusion.local_attention(
                    infusion.local_norm(pooled.tokens), keys["local"], keys["local"], need_weights=False
                )[0]
            )
            assert_close(local_out, golden["oci_local_out_0"], OUTPUT_ATOL, "oci_local_out")
            infused = infusion(pooled.tokens, keys["local"], keys["global"])
            assert_close(infused, golden["oci_global_out_0"], OUTPUT_ATOL, "oci_global_out")
        else:
            assert pooled.counts.tolist() == golden["mask_nums"].tolist()
        context = (
            {
                "context_features": context_features,
                "region_context_grid_thw": inputs["region_context_grid_thw"],
                "view_ids": inputs["region_view_ids"],
            }
            if lite
            else {}
        )
        region_tokens = inner.object_tokens(crop_features, inputs["region_grid_thw"], *args[2:], init, **context)
        assert_close(region_tokens, golden["region_tokens"], OUTPUT_ATOL, "region_tokens")


def test_kmeans_from_recorded_start(case, model_and_inputs):
    model, _, _, init = model_and_inputs
    for i in range(case.num_regions):
        if f"kmeans_randperm_{i}" not in case.arrays:
            continue
        points = torch.from_numpy(case.arrays[f"kmeans_input_tokens_{i}"])
        if len(points) <= model.config.max_object_tokens:
            continue
        centroids = batched_kmeans(
            points[None], torch.ones(1, len(points), dtype=torch.bool), init[i : i + 1], model.config.kmeans_iterations
        )[0]
        assert_close(centroids, case.arrays[f"kmeans_centroids_{i}"], KMEANS_ATOL, f"kmeans_centroids_{i}")


def test_llm_inputs_and_logits(case, model_and_inputs):
    model, _, inputs, init = model_and_inputs
    golden = case.arrays
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            out = model(**inputs, region_kmeans_init=init, output_hidden_states=True)
    finally:
        hook.remove()
    assert_close(captured["embeds"], golden["inputs_embeds"], OUTPUT_ATOL, "inputs_embeds")
    assert_close(out.hidden_states[-1], golden["llm_last_hidden_state"], OUTPUT_ATOL, "llm_last_hidden_state")
    logits = out.logits[0]
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), golden["prefill_logits_argmax"])
    assert_close(torch.logsumexp(logits, -1), golden["prefill_logits_logsumexp"], OUTPUT_ATOL, "logsumexp")
    columns = torch.from_numpy(golden["logits_col_ids"])
    assert_close(logits[:, columns], golden["prefill_logits_cols"], OUTPUT_ATOL, "logits columns")
    top_ids = torch.from_numpy(golden["prefill_logits_last_top256_ids"])
    assert_close(logits[-1, top_ids], golden["prefill_logits_last_top256_values"], OUTPUT_ATOL, "last top-256")
    if "prefill_logits_last" in golden:
        assert_close(logits[-1], golden["prefill_logits_last"], OUTPUT_ATOL, "last logits")


def test_greedy_generation(case, model_and_inputs):
    model, _, inputs, init = model_and_inputs
    golden = case.arrays
    steps = len(golden["gen_ids"])
    with torch.no_grad():
        out = model.generate(
            **inputs,
            region_kmeans_init=init,
            max_new_tokens=steps,
            min_new_tokens=steps,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
        )
    new_ids = out.sequences[0, inputs["input_ids"].shape[1] :]
    np.testing.assert_array_equal(new_ids.numpy(), golden["gen_ids"])
    top_values = torch.stack([score[0].topk(golden["gen_step_topk_values"].shape[1]).values for score in out.scores])
    assert_close(top_values, golden["gen_step_topk_values"], OUTPUT_ATOL, "per-step top-10 logits")
