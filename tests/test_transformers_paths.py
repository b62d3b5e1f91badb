"""Standard transformers paths with regions: pipelines with batches, processor keywords and truncation, model
construction (each part built once, gradient checkpointing, no unused Lite module) and the tiny model's answers."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from golden import checkpoint_for, requires_checkpoint
from safetensors.torch import load_file
from samples import PHOTO, image_messages, shrunk_clip
from test_generation_paths import two_image_samples, video_and_image_samples
from transformers import Qwen2Model, VideoLlama3VisionModel, pipeline

import pixelrefer_hf.processing as processing
from pixelrefer_hf import PixelReferForConditionalGeneration
from pixelrefer_hf.conversion import convert_checkpoint
from pixelrefer_hf.tiny_random import TINY_VOCABULARY, build_tiny_random, tiny_config


@pytest.fixture(scope="module", params=["full", "lite"])
def tiny(request):
    return build_tiny_random(object_only=request.param == "lite")


def two_video_samples():
    """The same clip with other regions: a masklet, and boxes on two frames (a pipeline batches samples whose
    processor outputs have the same keys; mixing video and image samples is refused by the pipeline itself)."""
    first = video_and_image_samples(shrunk_clip(160, 90))[0]
    second = [
        {
            "role": "user",
            "content": [
                first[0]["content"][0],
                {"type": "text", "text": "Compare "},
                {"type": "region", "frame": 14, "box": [10, 30, 60, 80]},
                {"type": "text", "text": " and "},
                {"type": "region", "frame": 72, "box": [90, 10, 150, 60]},
            ],
        }
    ]
    return [first, second]


@pytest.mark.parametrize("samples", ["images", "videos"])
def test_pipeline_batch_equals_each_sample_alone(tiny, samples):
    model, processor = tiny
    pipe = pipeline("image-text-to-text", model=model, processor=processor, batch_size=2)
    chats = two_image_samples() if samples == "images" else two_video_samples()
    options = dict(max_new_tokens=6, do_sample=False, return_full_text=False)
    batched = [out[0]["generated_text"] for out in pipe(text=chats, **options)]
    alone = [pipe(text=[chat], **options)[0][0]["generated_text"] for chat in chats]
    assert batched == alone
    assert all(text.strip() for text in alone)


def test_processor_text_keywords(tiny):
    _, processor = tiny
    texts = ["<image>What is <region>?", "<image>Describe the picture in a few words, please."]
    kwargs = dict(images=[[PHOTO], [PHOTO]], regions=[[{"box": [10, 10, 50, 50]}], []])
    default = processor(text=texts, **kwargs)
    for padding in (True, "longest"):
        assert torch.equal(processor(text=texts, padding=padding, **kwargs)["input_ids"], default["input_ids"])
    longest = default["input_ids"].shape[1]
    padded = processor(text=texts, padding="max_length", max_length=longest + 7, **kwargs)
    assert padded["input_ids"].shape[1] == longest + 7
    assert torch.equal(padded["input_ids"][:, 7:], default["input_ids"])  # left padding, for generation
    right = processor(text=texts, text_kwargs={"padding_side": "right"}, **kwargs)
    short = int(right["attention_mask"][1].sum())
    assert torch.equal(right["input_ids"][1, :short], default["input_ids"][1, -short:])
    assert isinstance(processor(text=texts, return_tensors="np", **kwargs)["input_ids"], np.ndarray)
    one_each = processor(text=texts, images=[PHOTO, PHOTO], regions=kwargs["regions"])
    assert torch.equal(one_each["input_ids"], default["input_ids"])
    with pytest.raises(TypeError, match=r"unknown keyword\(s\) \['paddin'\]"):
        processor(text=texts, paddin=True, **kwargs)


def test_truncation_never_cuts_object_tokens(tiny):
    _, processor = tiny
    text = "<image>Tell me about <region> in detail."
    kwargs = dict(images=PHOTO, regions=[{"box": [10, 10, 50, 50]}])
    full = processor(text=text, **kwargs)["input_ids"]
    with pytest.raises(ValueError, match=rf"sample 0: truncation .* cuts .*needs {full.shape[1]} tokens"):
        processor(text=text, truncation=True, max_length=full.shape[1] - 6, **kwargs)
    kept = processor(text=text, truncation=True, max_length=full.shape[1], **kwargs)["input_ids"]
    assert torch.equal(kept, full)


def test_chat_template_keywords(tiny):
    _, processor = tiny
    messages = image_messages(PHOTO, [{"box": [10, 10, 50, 50]}], "What is")
    messages.append({"role": "assistant", "content": [{"type": "text", "text": "It is a"}]})
    text = processor.apply_chat_template(messages, continue_final_message=True)
    assert text.endswith("<|im_start|>assistant\nIt is a")
    inputs = processor.apply_chat_template(
        messages, continue_final_message=True, tokenize=True, return_dict=True, processor_kwargs={"padding": True}
    )
    assert processor.decode(inputs["input_ids"][0]).endswith("assistant\nIt is a")


def count_constructions(monkeypatch, cls):
    calls = []
    original = cls.__init__

    def counting(self, *args, **kwargs):
        calls.append(cls.__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", counting)
    return calls


@pytest.mark.parametrize("object_only", [False, True])
def test_one_construction_builds_each_part_once(monkeypatch, object_only):
    vision = count_constructions(monkeypatch, VideoLlama3VisionModel)
    language = count_constructions(monkeypatch, Qwen2Model)
    model = PixelReferForConditionalGeneration(tiny_config(object_only=object_only))
    assert len(vision) == 1 and len(language) == 1
    has_projector = any(name.startswith("model.projector.") for name, _ in model.named_parameters())
    assert has_projector != object_only


def test_gradient_checkpointing_from_the_config():
    config = tiny_config()
    config.gradient_checkpointing = True
    model = PixelReferForConditionalGeneration(config)
    assert model.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.model.language_model.layers)


def test_lite_trains_every_parameter():
    """Lite carries no module it never uses, so DDP needs no find_unused_parameters."""
    model, processor = build_tiny_random(object_only=True)
    inputs = processor.apply_chat_template(
        image_messages(PHOTO, [{"box": [425, 20, 472, 225]}], "What is"), tokenize=True, return_dict=True
    )
    model.train()
    try:
        model(**inputs, labels=inputs["input_ids"]).loss.backward()
        unused = [name for name, p in model.named_parameters() if p.grad is None]
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
    assert unused == []


@requires_checkpoint("lite")
def test_converter_drops_the_lite_image_projector(tmp_path, caplog):
    source = checkpoint_for("lite")
    projector = sorted(k for k in load_file(source / "model.safetensors") if k.startswith("model.mm_projector."))
    assert projector, "the original Lite release carries an (unused) image projector"
    with caplog.at_level("INFO"):
        report = convert_checkpoint(source, tmp_path / "lite", progress=False)
    assert set(projector) <= set(report.dropped_keys)
    assert "model.mm_projector." in caplog.text
    assert not any(key.startswith("model.projector.") for key in load_file(tmp_path / "lite" / "model.safetensors"))


def test_tiny_model_answers_in_words_that_depend_on_the_regions(tiny):
    model, processor = tiny
    answers = []
    for box in ([425, 20, 472, 225], [405, 215, 492, 385]):
        inputs = processor.apply_chat_template(
            image_messages(PHOTO, [{"box": box}], "What is"),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        answers.append(out[0, inputs["input_ids"].shape[1] :])
    assert not torch.equal(answers[0], answers[1])
    for ids in answers:
        words = processor.decode(ids).split()
        assert len(words) == 8 and set(words) <= set(TINY_VOCABULARY)


def test_processing_does_not_import_modeling():
    """The processor side never imports the torch model code (the package's Auto registration does, on purpose)."""
    for path in Path(processing.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert "modeling" not in node.module.split("."), f"{path.name} imports {node.module}"


def test_processor_outputs_are_model_inputs(tiny):
    """Every name the processor declares is an input of the model's forward, so Trainer keeps its columns."""
    model, processor = tiny
    assert set(processor.model_input_names) <= set(inspect.signature(model.forward).parameters)
    inputs = processor.apply_chat_template(two_image_samples()[0], tokenize=True, return_dict=True)
    assert set(inputs) <= set(processor.model_input_names)


def test_image_features_match_the_forward():
    model, processor = build_tiny_random()
    inputs = processor.apply_chat_template(two_image_samples()[0], tokenize=True, return_dict=True)
    image_inputs = {name: inputs[name] for name in ("pixel_values", "image_grid_thw", "image_merge_sizes")}
    with torch.no_grad():
        features = model.get_image_features(**image_inputs)
        out = model(**inputs)
    torch.testing.assert_close(torch.cat(features.pooler_output), out.image_hidden_states, rtol=0, atol=1e-6)


def test_lite_refuses_image_features():
    model, processor = build_tiny_random(object_only=True)
    image = processor.image_processor(images=[PHOTO], return_tensors="pt")
    with pytest.raises(ValueError, match="feeds no image or video tokens to its LLM"):
        model.get_image_features(**image)


def test_original_names_stay_aliases(tmp_path):
    """`mask_num` and `oci_num_heads` (the original's names, and configs saved before the rename) keep working."""
    config = tiny_config()
    config_dict = config.to_dict()
    assert "mask_num" not in config_dict and config_dict["max_object_tokens"] == 32
    config_dict["mask_num"] = config_dict.pop("max_object_tokens") // 2
    config_dict["oci_num_heads"] = config_dict.pop("infusion_num_heads") // 2
    old = type(config).from_dict(config_dict)
    assert (old.max_object_tokens, old.mask_num, old.infusion_num_heads) == (16, 16, 4)
    _, processor = build_tiny_random()
    renamed = type(processor)(processor.image_processor, processor.tokenizer, mask_num=8)
    assert renamed.max_object_tokens == 8 and renamed.region_processor.max_object_tokens == 8
