"""Fine-tuning PixelRefer with the HF Trainer on data in the original release's format: the dataset (processor
inputs with labels), the collator, the original's recipes and `pixelrefer train`."""

from .collator import PixelReferDataCollator
from .dataset import (
    IGNORE_INDEX,
    BadSampleError,
    PixelReferTrainingDataset,
    TrainingSample,
    check_data,
    load_samples,
    sample_to_messages,
)
from .finetune import PixelReferTrainArguments, configure_processor, finetune
from .recipes import RECIPES, PixelReferTrainer, TrainingRecipe, apply_recipe, model_part, parameter_groups


__all__ = [
    "IGNORE_INDEX",
    "RECIPES",
    "BadSampleError",
    "PixelReferDataCollator",
    "PixelReferTrainArguments",
    "PixelReferTrainer",
    "PixelReferTrainingDataset",
    "TrainingRecipe",
    "TrainingSample",
    "apply_recipe",
    "check_data",
    "configure_processor",
    "finetune",
    "load_samples",
    "model_part",
    "parameter_groups",
    "sample_to_messages",
]
