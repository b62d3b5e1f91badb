"""The original release's training recipes: which parts of PixelRefer train, at which learning rate.

The model has four parts: the vision encoder, the image projector (full model only), the region encoder (the object
tokenizer, and Lite's object infusion) and the LLM (language model and LM head). A recipe gives each part a learning
rate; a part without one is frozen (`requires_grad=False`, and it is left out of the optimizer). The original trains
with `--llm_lr 1e-5 --mm_projector_lr 1e-5 --region_encoder_lr 1e-3 --vision_encoder_lr 0` in stage 1 and
`--region_encoder_lr 1e-5` in stage 2 (`scripts/train/pixelrefer/stage{1,2}.sh`); its learning rate 0 still computes
the vision encoder's gradients, here it is frozen.
"""

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Trainer


# The modules of each part, as paths in `PixelReferForConditionalGeneration`.
MODEL_PARTS = {
    "vision_encoder": ("model.vision_model",),
    "projector": ("model.projector",),
    "region_encoder": ("model.object_tokenizer", "model.object_infusion"),
    "llm": ("model.language_model", "lm_head"),
}
# The LLM's attention and MLP projections, for LoRA (a plain `q_proj` would also match the vision encoder's).
LLM_LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class TrainingRecipe:
    """Learning rate of each part of the model (`MODEL_PARTS`); a part not named is frozen.

    lora: train the LLM through LoRA adapters of rank `lora_rank` (PEFT) at the `"llm"` rate, the region encoder in
        full.
    """

    learning_rates: dict[str, float] = field(default_factory=dict)
    lora: bool = False
    lora_rank: int = 16

    def __post_init__(self):
        unknown = set(self.learning_rates) - set(MODEL_PARTS)
        if unknown:
            raise ValueError(f"Unknown model parts {sorted(unknown)} in a recipe; the parts are {list(MODEL_PARTS)}.")


RECIPES = {
    "stage1": TrainingRecipe({"llm": 1e-5, "projector": 1e-5, "region_encoder": 1e-3}),
    "stage2": TrainingRecipe({"llm": 1e-5, "projector": 1e-5, "region_encoder": 1e-5}),
    "region-encoder": TrainingRecipe({"region_encoder": 1e-3}),
    "lora": TrainingRecipe({"llm": 2e-4, "region_encoder": 1e-3}, lora=True),
}


def model_part(parameter_name: str) -> str | None:
    """The part (`MODEL_PARTS` key) a parameter belongs to, also under a PEFT wrapper; None if none."""
    name = parameter_name.removeprefix("base_model.model.")
    for part, prefixes in MODEL_PARTS.items():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return part
    return None


def apply_recipe(model: nn.Module, recipe: TrainingRecipe) -> nn.Module:
    """Freezes the parts `recipe` does not train and, for a LoRA recipe, wraps the model with PEFT; returns the model
    to train (the PEFT model for LoRA)."""
    if recipe.lora:
        return _with_lora(model, recipe)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(model_part(name) in recipe.learning_rates)
    return model


def _with_lora(model: nn.Module, recipe: TrainingRecipe) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    region_modules = [path.split(".")[-1] for path in MODEL_PARTS["region_encoder"]]
    config = LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=2 * recipe.lora_rank,
        target_modules=LLM_LORA_TARGETS,
        modules_to_save=[name for name in region_modules if getattr(model.model, name) is not None],
    )
    return get_peft_model(model, config)


def parameter_groups(
    model: nn.Module, learning_rates: dict[str, float], decay_names: set[str], weight_decay: float
) -> list[dict]:
    """Optimizer parameter groups: one per trained part and weight-decay setting, with that part's learning rate."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        part = model_part(name)
        if not parameter.requires_grad:
            continue
        if part not in learning_rates:
            raise ValueError(
                f"Parameter {name} trains but its part ({part}) has no learning rate; give the recipe one for it or "
                "freeze it."
            )
        groups.setdefault((part, name in decay_names), []).append(parameter)
    return [
        {"params": params, "lr": learning_rates[part], "weight_decay": weight_decay if decay else 0.0}
        for (part, decay), params in groups.items()
    ]


class PixelReferTrainer(Trainer):
    """`Trainer` with a learning rate per model part (`learning_rates`, e.g. `RECIPES["stage1"].learning_rates`);
    without them it is the plain `Trainer`. The schedule (warm-up, decay) scales every part's rate alike."""

    def __init__(self, *args, learning_rates: dict[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.learning_rates = learning_rates

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.learning_rates is None or self.optimizer is not None:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        decay_names = set(self.get_decay_parameter_names(model))
        groups = parameter_groups(model, self.learning_rates, decay_names, self.args.weight_decay)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer


__all__ = ["RECIPES", "PixelReferTrainer", "TrainingRecipe", "apply_recipe", "model_part", "parameter_groups"]
