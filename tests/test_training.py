"""Fine-tuning with the HF Trainer: collation (padding, packing), labels, the loss, recipes that really freeze,
per-part learning rates, LoRA, resuming."""

import numpy as np
import pytest
import torch
from PIL import Image
from samples import PHOTO
from transformers import AutoModelForImageTextToText, TrainerCallback, TrainingArguments

from pixelrefer_hf.tiny_random import build_tiny_random
from pixelrefer_hf.training.collator import PixelReferDataCollator
from pixelrefer_hf.training.recipes import RECIPES, PixelReferTrainer, apply_recipe, model_part


IMAGE = np.asarray(Image.fromarray(PHOTO).resize((224, 148)))  # small, so that a step takes a fraction of a second


def conversation(box: list[int], question: str, answer: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": IMAGE},
                {"type": "text", "text": question + " "},
                {"type": "region", "box": box},
            ],
        },
        {"role": "assistant", "content": answer},
    ]


def item(processor, chat: list[dict]) -> dict:
    """One training sample as a dataset yields it: the processor's outputs with labels on the assistant tokens."""
    out = dict(processor.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True))
    out["labels"] = out["input_ids"].masked_fill(out.pop("assistant_masks") == 0, -100)
    return out


def toy_dataset(processor, size: int = 8) -> list[dict]:
    answers = ("a tall stone tower", "a road with a car", "the dark water", "a small person walking")
    return [
        item(processor, conversation([10 + 10 * i, 20, 110 + 10 * i, 130], "What is", answers[i % len(answers)]))
        for i in range(size)
    ]


@pytest.fixture(scope="module", params=["full", "lite"])
def tiny(request):
    return build_tiny_random(object_only=request.param == "lite")


def training_args(tmp_path, **overrides) -> TrainingArguments:
    options = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        max_steps=6,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
    )
    return TrainingArguments(**{**options, **overrides})


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_collator_pads_and_labels_only_the_answer(tiny):
    _, processor = tiny
    items = [
        item(processor, conversation([10, 20, 110, 130], "What is", "a tower")),
        item(processor, conversation([50, 20, 150, 130], "Name", "the dark water under the bridge")),
    ]
    batch = PixelReferDataCollator(processor.tokenizer.pad_token_id)(items)
    tokenizer = processor.tokenizer
    lengths = [it["input_ids"].shape[1] for it in items]
    assert batch["input_ids"].shape == (2, max(lengths))
    for row, (it, answer) in enumerate(zip(items, ("a tower", "the dark water under the bridge"))):
        n = lengths[row]
        assert torch.equal(batch["input_ids"][row, :n], it["input_ids"][0])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (max(lengths) - n)
        expected = tokenizer(answer + "<|im_end|>")["input_ids"]
        # The answer and its <|im_end|> are the last supervised tokens; everything before (prompt, image and
        # <REGION> tokens, `<|im_start|>assistant\n`) and after (the newline, padding) is -100.
        labels = batch["labels"][row]
        supervised = torch.nonzero(labels != -100)[:, 0]
        assert labels[supervised].tolist() == expected
        assert supervised.tolist() == list(range(n - 1 - len(expected), n - 1))
    for key in ("region_pixel_values", "region_masks", "region_boxes"):
        torch.testing.assert_close(batch[key], torch.cat([it[key] for it in items]), rtol=0, atol=0)
    assert PixelReferDataCollator(processor.tokenizer.pad_token_id)([None, items[0]])["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="All 2 samples of this batch were skipped"):
        PixelReferDataCollator(processor.tokenizer.pad_token_id)([None, None])


def test_loss_is_the_cross_entropy_of_the_answer_tokens(tiny):
    model, processor = tiny
    batch = PixelReferDataCollator(processor.tokenizer.pad_token_id)(toy_dataset(processor, 2))
    with torch.no_grad():
        out = model(**batch)
    logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
    picked = labels != -100
    log_probs = torch.log_softmax(logits[picked], -1)
    expected = -log_probs.gather(1, labels[picked][:, None]).mean()
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-5)


def test_packed_batch_equals_each_sample_alone(tiny):
    """Padding-free packing: one row, position_ids restarting per sample; each sample's logits as if alone."""
    model, processor = tiny
    items = toy_dataset(processor, 2)
    packed = PixelReferDataCollator(processor.tokenizer.pad_token_id, packing=True)(items)
    assert packed["input_ids"].shape == (1, sum(it["input_ids"].shape[1] for it in items))
    assert "attention_mask" not in packed
    with torch.no_grad():
        hidden = model.model(**{k: v for k, v in packed.items() if k != "labels"}).last_hidden_state[0]
        start = 0
        for it in items:
            alone = model.model(**{k: v for k, v in it.items() if k != "labels"}).last_hidden_state[0]
            torch.testing.assert_close(hidden[start : start + len(alone)], alone, rtol=0, atol=1e-5)
            start += len(alone)
    starts = [0, items[0]["input_ids"].shape[1]]
    assert packed["labels"][0, starts].tolist() == [-100, -100]


def test_recipe_freezes_what_it_does_not_train(tmp_path):
    model, processor = build_tiny_random()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model = apply_recipe(model, RECIPES["region-encoder"])
    trainer = PixelReferTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=3),
        train_dataset=toy_dataset(processor, 6),
        data_collator=PixelReferDataCollator(processor.tokenizer.pad_token_id),
        learning_rates=RECIPES["region-encoder"].learning_rates,
    )
    trainer.train()
    changed = {model_part(name) for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"region_encoder"}
    assert [group["lr"] for group in trainer.optimizer.param_groups] != []
    assert all(model_part(name) == "region_encoder" for name, p in model.named_parameters() if p.requires_grad)


def test_each_part_gets_its_learning_rate(tmp_path):
    model, processor = build_tiny_random()
    recipe = RECIPES["stage1"]
    model = apply_recipe(model, recipe)
    trainer = PixelReferTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=1, warmup_steps=0, lr_scheduler_type="constant"),
        train_dataset=toy_dataset(processor, 2),
        data_collator=PixelReferDataCollator(processor.tokenizer.pad_token_id),
        learning_rates=recipe.learning_rates,
    )
    trainer.train()
    names = {id(p): name for name, p in model.named_parameters()}
    for group in trainer.optimizer.param_groups:
        parts = {model_part(names[id(p)]) for p in group["params"]}
        assert len(parts) == 1 and group["lr"] == recipe.learning_rates[parts.pop()]
    assert not any(p.requires_grad for p in model.model.vision_model.parameters())


def test_resume_gives_the_same_losses(tmp_path):
    """Stopping after step 3 and resuming from its checkpoint logs the same losses at steps 4-6 (atol 1e-4)."""
    processor = build_tiny_random()[1]
    data = toy_dataset(processor)
    collator = PixelReferDataCollator(processor.tokenizer.pad_token_id)

    def run(output, max_steps, resume=None):
        trainer = PixelReferTrainer(
            model=build_tiny_random()[0],
            args=training_args(output, max_steps=6, save_strategy="steps", save_steps=3),
            train_dataset=data,
            data_collator=collator,
        )
        if max_steps < 6:
            trainer.add_callback(StopAfter(max_steps))
        trainer.train(resume_from_checkpoint=resume)
        return losses(trainer)

    uninterrupted = run(tmp_path / "a", 6)
    run(tmp_path / "b", 3)
    resumed = run(tmp_path / "b", 6, resume=str(tmp_path / "b" / "run" / "checkpoint-3"))
    # The resumed run's log starts with the checkpoint's own history of steps 1-3.
    assert len(uninterrupted) == len(resumed) == 6
    np.testing.assert_allclose(resumed[3:], uninterrupted[3:], rtol=0, atol=1e-4)


class StopAfter(TrainerCallback):
    """Stops training after `steps` steps (a crash right after the checkpoint of that step)."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control


def test_lora_trains_adapters_and_region_encoder_only(tmp_path):
    from peft import PeftModel

    base, processor = build_tiny_random()
    base.save_pretrained(tmp_path / "base")
    model = apply_recipe(base, RECIPES["lora"])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = PixelReferTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=3),
        train_dataset=toy_dataset(processor, 6),
        data_collator=PixelReferDataCollator(processor.tokenizer.pad_token_id),
        learning_rates=RECIPES["lora"].learning_rates,
    )
    trainer.train()
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert changed and all("lora_" in name or "modules_to_save" in name for name in changed)
    assert any("object_tokenizer.modules_to_save" in name for name in changed)
    assert any("language_model" in name and "lora_" in name for name in changed)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    batch = PixelReferDataCollator(processor.tokenizer.pad_token_id)(toy_dataset(processor, 2))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits, rtol=0, atol=1e-5)
