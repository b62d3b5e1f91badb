"""`pixelrefer train`: fine-tune PixelRefer on data in the original release's format with the HF Trainer.

The same command runs on one CPU, one GPU, or under `accelerate launch` / `torchrun` (DDP; FSDP and DeepSpeed through
their usual `TrainingArguments` flags or an accelerate config), since the Trainer does the distribution.
"""

from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, ProcessorMixin, TrainingArguments
from transformers.utils import logging

from .collator import PixelReferDataCollator
from .dataset import PixelReferTrainingDataset, check_data, load_samples
from .recipes import RECIPES, PixelReferTrainer, TrainingRecipe, apply_recipe


logger = logging.get_logger(__name__)


@dataclass
class PixelReferTrainArguments:
    """The options of `pixelrefer train` besides `TrainingArguments`."""

    data: list[str] = field(metadata={"help": "training data in the original format (.json or .jsonl); repeatable"})
    media_root: str = field(metadata={"help": "folder the data's image and video paths are relative to"})
    output: str = field(metadata={"help": "folder for checkpoints and the final model (and its processor)"})
    model: str = field(
        default="tiny-random",
        metadata={"help": "converted folder or Hub id to fine-tune (default: tiny-random, random weights)"},
    )
    recipe: str = field(
        default="stage2",
        metadata={"help": "which parts train at which learning rate", "choices": list(RECIPES)},
    )
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank of the `lora` recipe"})
    packing: bool = field(default=False, metadata={"help": "padding-free batches (samples packed in one row)"})
    skip_bad_samples: bool = field(
        default=False, metadata={"help": "skip samples with bad data (counted in the log) instead of stopping"}
    )
    check_data: bool = field(default=False, metadata={"help": "check every sample, report the bad ones, and exit"})
    allow_outside_media_root: bool = field(
        default=False, metadata={"help": "allow media paths that are absolute or leave --media_root"}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "image pixel budget (the processor's longest_edge), e.g. 200704 for tests"}
    )
    max_frames: int | None = field(default=None, metadata={"help": "most frames sampled per video"})
    lr_scale: float = field(default=1.0, metadata={"help": "multiply every learning rate of the recipe by this"})

    def training_recipe(self) -> TrainingRecipe:
        recipe = RECIPES[self.recipe]
        rates = {part: rate * self.lr_scale for part, rate in recipe.learning_rates.items()}
        return TrainingRecipe(rates, lora=recipe.lora, lora_rank=self.lora_rank)


def configure_processor(processor: ProcessorMixin, max_pixels: int | None, max_frames: int | None) -> None:
    """Overrides the processor's image pixel budget and video frame count (saved with the fine-tuned model)."""
    if max_pixels is not None:
        processor.image_processor.size = {**dict(processor.image_processor.size), "longest_edge": max_pixels}
    if max_frames is not None:
        processor.video_max_frames = max_frames


def finetune(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    args: PixelReferTrainArguments,
    training_args: TrainingArguments,
) -> PixelReferTrainer:
    """Trains `model` on `args.data` with `args.recipe`, then saves the model and processor to `args.output`
    (a LoRA run saves its adapter to `output/adapter` and the merged model to `output`) with the log
    (`trainer_state.json`, in `training_args.output_dir`)."""
    recipe = args.training_recipe()
    dataset = _training_data(args, processor)
    model.config.use_cache = False
    trainer = PixelReferTrainer(
        model=apply_recipe(model, recipe),
        args=training_args,
        train_dataset=dataset,
        data_collator=PixelReferDataCollator(processor.tokenizer.pad_token_id, packing=args.packing),
        learning_rates=recipe.learning_rates,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    if dataset.num_bad_samples:
        logger.warning("Skipped %d more samples that were bad when loaded.", dataset.num_bad_samples)
    trainer.save_state()
    _save(trainer, processor, Path(args.output), recipe.lora)
    return trainer


def _training_data(args: PixelReferTrainArguments, processor: ProcessorMixin) -> PixelReferTrainingDataset:
    """The training samples; with `skip_bad_samples`, those `check_data` refuses are left out first (and counted),
    so that no batch is all bad, and samples found bad only when loaded are skipped then."""
    samples = load_samples(args.data)
    if args.skip_bad_samples:
        options = {"allow_outside_media_root": args.allow_outside_media_root}
        bad = {
            (error.sample.source, error.sample.index)
            for error in check_data(samples, processor, args.media_root, **options)
        }
        if bad:
            logger.warning(
                "Skipping %d bad samples of %d (--skip_bad_samples; `--check_data` lists them).",
                len(bad),
                len(samples),
            )
        samples = [sample for sample in samples if (sample.source, sample.index) not in bad]
    return PixelReferTrainingDataset(
        samples,
        processor,
        args.media_root,
        skip_bad_samples=args.skip_bad_samples,
        allow_outside_media_root=args.allow_outside_media_root,
    )


def _save(trainer: PixelReferTrainer, processor: ProcessorMixin, output: Path, lora: bool) -> None:
    """The fine-tuned model as a folder the Auto classes load (and `pixelrefer push` publishes)."""
    model = trainer.model
    if lora:
        trainer.save_model(str(output / "adapter"))
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.config.use_cache = True
        model.save_pretrained(output)
        processor.save_pretrained(output)


__all__ = ["PixelReferTrainArguments", "configure_processor", "finetune"]
