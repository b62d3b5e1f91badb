"""Conversion of original release folders: every weight mapped or named, legacy .bin read safely."""

import json
import shutil

import pytest
import torch
from golden import checkpoint_for, requires_checkpoint
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

import pixelrefer_hf  # noqa: F401
from pixelrefer_hf.conversion import convert_checkpoint
from pixelrefer_hf.conversion.convert_original import _vision_config, map_key


FULL = checkpoint_for("full")  # the golden set's original full checkpoint, whatever its folder is called
pytestmark = requires_checkpoint("full")


@pytest.fixture
def original_copy(tmp_path):
    folder = tmp_path / "original"
    shutil.copytree(FULL, folder)
    for path in folder.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return folder


def test_every_weight_is_mapped_and_copied(tmp_path):
    report = convert_checkpoint(FULL, tmp_path / "out", progress=False)
    assert report.variant == "full" and report.has_processor
    assert report.missing_keys == [] and report.dropped_keys == []
    original = load_file(FULL / "model.safetensors")
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    state = model.state_dict()
    for key, tensor in original.items():
        assert torch.equal(state[map_key(key)], tensor), key
    assert report.num_tensors == len(original)
    assert AutoProcessor.from_pretrained(tmp_path / "out").tokenizer.convert_tokens_to_ids("<REGION>") == (
        model.config.region_token_id
    )


def test_unknown_weight_fails_naming_it(original_copy, tmp_path):
    weights = load_file(original_copy / "model.safetensors")
    weights["model.region_encoder.extra_head.weight"] = torch.zeros(2, 2)
    save_file(weights, original_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"model\.region_encoder\.extra_head\.weight"):
        convert_checkpoint(original_copy, tmp_path / "out", progress=False)


def test_missing_weight_fails_naming_it_unless_allowed(original_copy, tmp_path, caplog):
    weights = load_file(original_copy / "model.safetensors")
    del weights["model.region_encoder.pos_linear.bias"]
    save_file(weights, original_copy / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 weights .* missing .*box_position_embedding\.bias.*allow_missing=True"):
        convert_checkpoint(original_copy, tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()
    report = convert_checkpoint(original_copy, tmp_path / "out", progress=False, allow_missing=True)
    assert report.missing_keys == ["model.object_tokenizer.box_position_embedding.bias"]
    assert "box_position_embedding.bias" in caplog.text


def test_legacy_bin_is_read_with_weights_only(original_copy, tmp_path):
    weights = load_file(original_copy / "model.safetensors")
    (original_copy / "model.safetensors").unlink()
    torch.save(weights, original_copy / "pytorch_model.bin")
    convert_checkpoint(original_copy, tmp_path / "out", progress=False)
    reference = AutoModelForImageTextToText.from_pretrained(
        convert_checkpoint(FULL, tmp_path / "ref", progress=False).output_dir
    )
    converted = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    for key, tensor in reference.state_dict().items():
        assert torch.equal(converted.state_dict()[key], tensor), key


class NotATensor:
    pass


def test_unsafe_bin_is_refused(original_copy, tmp_path):
    (original_copy / "model.safetensors").unlink()
    torch.save({"model.norm.weight": NotATensor()}, original_copy / "pytorch_model.bin")
    with pytest.raises(ValueError, match="unsafe pickle"):
        convert_checkpoint(original_copy, tmp_path / "out", progress=False)


def test_not_an_original_folder(tmp_path, original_copy):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert_checkpoint(tmp_path / "missing", tmp_path / "out", progress=False)
    config = json.loads((original_copy / "config.json").read_text())
    config["model_type"] = "llava"
    (original_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'llava'"):
        convert_checkpoint(original_copy, tmp_path / "out", progress=False)


def test_without_tokenizer_there_is_no_processor(original_copy, tmp_path):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"):
        (original_copy / name).unlink()
    report = convert_checkpoint(original_copy, tmp_path / "out", progress=False)
    assert not report.has_processor
    assert not (tmp_path / "out" / "processor_config.json").exists()


def test_vision_config_inferred_without_local_encoder_folder():
    prefix = "model.vision_encoder.vision_encoder."
    weights = {prefix + "embeddings.patch_embedding.weight": torch.empty(1152, 3, 14, 14)}
    weights |= {prefix + f"encoder.layers.{i}.mlp.fc1.weight": torch.empty(4304, 1152) for i in range(27)}
    config = _vision_config(FULL, {"mm_vision_encoder": "DAMO-NLP-SG/VL3-SigLIP-NaViT"}, weights)
    assert config == {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "num_channels": 3,
        "patch_size": 14,
    }


@pytest.mark.parametrize(
    "settings, image_budget",
    [
        ({"mm_max_length": 8192, "spatial_merge_size": 2}, 8192 * 14 * 14),  # the release's settings
        ({"mm_max_length": 2048}, 2048 * 14 * 14),
        ({"mm_max_length": None, "spatial_merge_size": 2}, (9477 // 4) * 14 * 14),  # the original's default
    ],
)
def test_pixel_budget_comes_from_the_checkpoint_config(original_copy, tmp_path, settings, image_budget):
    """The original overrides its preprocessor's max_pixels with mm_max_length * (merge * patch)**2 and divides it
    by merge**2 for images; the converted processor config carries that budget (and the video merge size)."""
    config = json.loads((original_copy / "config.json").read_text())
    config.update({k: v for k, v in settings.items() if v is not None})
    for key in (k for k, v in settings.items() if v is None):
        config.pop(key)
    (original_copy / "config.json").write_text(json.dumps(config))
    convert_checkpoint(original_copy, tmp_path / "out", progress=False)
    saved = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert saved["image_processor"]["size"]["longest_edge"] == image_budget
    assert saved["video_merge_size"] == config["spatial_merge_size"]
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert processor.image_processor.size["longest_edge"] == image_budget
