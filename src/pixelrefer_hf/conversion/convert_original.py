"""Original PixelRefer / PixelRefer-Lite release folders -> standard Transformers folders.

The original folder holds a `config.json` (`model_type` `pixelrefer_qwen2` or `pixelreferlite_qwen2`), the weights as
safetensors or legacy `.bin` shards, the vision-encoder folder named by `mm_vision_encoder` (config and preprocessor
config) when it is local, and usually the tokenizer files. The converted folder loads with
`AutoModelForImageTextToText.from_pretrained` and, when a tokenizer was present, `AutoProcessor.from_pretrained`.
"""

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm
from transformers import AutoTokenizer, GenerationConfig
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name
from transformers.utils import logging

from ..modeling import PixelReferConfig, PixelReferForConditionalGeneration
from ..processing import PixelReferProcessor


logger = logging.get_logger(__name__)

VARIANTS = {"pixelrefer_qwen2": "full", "pixelreferlite_qwen2": "lite"}

# original key pattern -> converted key template
KEY_MAPPING = [
    (r"^model\.vision_encoder\.vision_encoder\.(.*)$", r"model.vision_model.\1"),
    (r"^model\.mm_projector\.readout\.(\d+)\.(weight|bias)$", r"model.projector.readout.\1.\2"),
    (r"^model\.region_encoder\.pos_linear\.(weight|bias)$", r"model.object_tokenizer.box_position_embedding.\1"),
    (r"^model\.region_encoder\.feat_linear\.(\d+)\.(weight|bias)$", r"model.object_tokenizer.projector.\1.\2"),
    (r"^model\.region_encoder\.fusion_attention_(local|global)\.(.*)$", r"model.object_infusion.\1_attention.\2"),
    (r"^model\.region_encoder\.ln_(local|global)\.(weight|bias)$", r"model.object_infusion.\1_norm.\2"),
    (r"^model\.(embed_tokens|layers|norm)\.(.*)$", r"model.language_model.\1.\2"),
    (r"^lm_head\.weight$", r"lm_head.weight"),
]

# Weights of the original that its forward pass never uses, per variant (Lite's LLM sees no image features, so its
# image projector is dropped).
UNUSED_KEYS = {
    "full": [r"^model\.region_encoder\.mask_embedding\.(weight|bias)$"],
    "lite": [r"^model\.region_encoder\.mask_embedding\.(weight|bias)$", r"^model\.mm_projector\."],
}

# SigLIP-NaViT (VL3-SigLIP-NaViT) has 72-dimensional attention heads; used when its config is not available locally.
SIGLIP_NAVIT_HEAD_DIM = 72


@dataclass
class ConversionReport:
    """What a conversion did: the variant found, and keys that were dropped or left at their initial value."""

    variant: str
    output_dir: Path
    num_tensors: int
    dropped_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    has_processor: bool = False


def map_key(key: str) -> str | None:
    """Converted name of an original weight, or None when it has no counterpart."""
    for pattern, template in KEY_MAPPING:
        if re.match(pattern, key):
            return re.sub(pattern, template, key)
    return None


def load_original_state_dict(src: Path, progress: bool = True) -> dict[str, torch.Tensor]:
    """Reads all weight shards of an original folder: safetensors when there are any (the `.bin` shards are then
    ignored), else legacy `.bin` with `weights_only=True`, which never unpickles anything but tensors.

    Raises a `ValueError` naming the shard for a corrupt or unsafe shard, a `.bin` that is not a state dict, and a
    tensor that two shards both hold.
    """
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        shards = sorted(p for p in src.glob("*.bin") if p.name != "training_args.bin")
    if not shards:
        raise FileNotFoundError(
            f"No *.safetensors or *.bin weights in {src}; pass an original PixelRefer release folder."
        )
    state_dict, origin = {}, {}
    for shard in tqdm(shards, desc="Reading shards", unit="shard", disable=not progress or len(shards) < 2):
        tensors = _read_shard(shard)
        for key in tensors:
            if key in origin:
                raise ValueError(
                    f"{shard} and {origin[key]} both hold the tensor {key!r}; pass a folder whose shards each hold "
                    "their own tensors (remove a stale shard)."
                )
            origin[key] = shard
        state_dict.update(tensors)
    return state_dict


def _read_shard(shard: Path) -> dict[str, torch.Tensor]:
    """The tensors of one weight shard (see `load_original_state_dict`)."""
    if shard.suffix == ".safetensors":
        try:
            with safe_open(shard, framework="pt") as f:
                return {key: f.get_tensor(key) for key in f.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{shard} is not a readable safetensors file ({error}); download it again.") from error
    try:
        tensors = torch.load(shard, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{shard} holds more than tensors and is not loaded (unsafe pickle: {error}). Convert it to "
            "safetensors in a trusted environment, or pass a folder with *.safetensors weights."
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise ValueError(f"{shard} is not a readable PyTorch checkpoint ({error}); download it again.") from error
    if not isinstance(tensors, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in tensors.items()
    ):
        raise ValueError(
            f"{shard} does not hold a state dict (a dict of named tensors); pass the release's weight shards."
        )
    return tensors


def _vision_config(src: Path, original: dict, state_dict: dict[str, torch.Tensor]) -> dict:
    """The vision config from the local encoder folder, or inferred from the weight shapes."""
    folder = src / original.get("mm_vision_encoder", original.get("vision_encoder", ""))
    config_file = folder / "config.json"
    if original.get("mm_vision_encoder") and config_file.is_file():
        vision = json.loads(config_file.read_text())
        keys = [
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_channels",
            "patch_size",
            "hidden_act",
            "layer_norm_eps",
            "attention_dropout",
        ]
        return {k: vision[k] for k in keys if k in vision}
    prefix = "model.vision_encoder.vision_encoder."
    patch = state_dict[prefix + "embeddings.patch_embedding.weight"]
    layers = {
        int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", k))
    }
    hidden = patch.shape[0]
    logger.warning(
        "No local config for the vision encoder %r; inferring it from the weights (SigLIP-NaViT head size %d).",
        original.get("mm_vision_encoder"),
        SIGLIP_NAVIT_HEAD_DIM,
    )
    return {
        "hidden_size": hidden,
        "intermediate_size": state_dict[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": hidden // SIGLIP_NAVIT_HEAD_DIM,
        "num_channels": patch.shape[1],
        "patch_size": patch.shape[-1],
    }


def _text_config(original: dict) -> dict:
    keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_act",
        "max_position_embeddings",
        "rms_norm_eps",
        "attention_dropout",
        "tie_word_embeddings",
        "use_sliding_window",
        "sliding_window",
        "max_window_layers",
        "bos_token_id",
        "eos_token_id",
        "initializer_range",
    ]
    text = {k: original[k] for k in keys if k in original}
    text["model_type"] = "qwen2"
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": original.get("rope_theta", 1000000.0)}
    return text


def build_config(src: Path, original: dict, state_dict: dict[str, torch.Tensor]) -> PixelReferConfig:
    """PixelReferConfig equivalent to an original `config.json`."""
    variant = VARIANTS[original["model_type"]]
    return PixelReferConfig(
        text_config=_text_config(original),
        vision_config=_vision_config(src, original, state_dict),
        image_token_id=original.get("image_token_index", 151665),
        region_token_id=original.get("region_token_index", 151668),
        max_object_tokens=original.get("mask_num", 32),
        object_only=variant == "lite",
        use_token_compression=original.get("use_token_compression", True),
        tie_word_embeddings=original.get("tie_word_embeddings", False),
    )


def _tokenizer_class(src: Path) -> type:
    """The tokenizer class named by `tokenizer_config.json`, so the original (non-Transformers) config is not read."""
    config_file = src / "tokenizer_config.json"
    name = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    return (name and tokenizer_class_from_name(name)) or AutoTokenizer


def build_processor(src: Path, original: dict, config: PixelReferConfig) -> PixelReferProcessor | None:
    """The processor of the converted folder, or None when the original folder has no tokenizer."""
    if not any((src / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        return None
    preprocessor_file = src / original.get("mm_vision_encoder", "") / "preprocessor_config.json"
    preprocessor = None
    if original.get("mm_vision_encoder") and preprocessor_file.is_file():
        preprocessor = json.loads(preprocessor_file.read_text())
    merge = original.get("spatial_merge_size", 2)
    return PixelReferProcessor.from_original_release(
        _tokenizer_class(src).from_pretrained(src),
        max_object_tokens=config.max_object_tokens,
        object_only=config.object_only,
        use_token_compression=config.use_token_compression,
        preprocessor=preprocessor,
        # The original's default when a config has no `mm_max_length`.
        max_vision_tokens=original.get("mm_max_length", 9477 // merge**2),
        spatial_merge_size=merge,
    )


def resolve_source(src: str | Path) -> Path:
    """A local folder as is; otherwise `src` is taken as a Hub repo id of an original release and downloaded."""
    if Path(src).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(src)):
        return Path(src)
    logger.info("%s is not a local folder: downloading it from the Hub", src)
    return Path(snapshot_download(str(src), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]))


def map_state_dict(state_dict: dict[str, torch.Tensor], variant: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Original weights -> converted names, and the original keys dropped as unused by `variant`; an original weight
    with no counterpart fails the conversion, naming it."""
    converted, unknown, dropped = {}, [], []
    for key, tensor in state_dict.items():
        new_key = map_key(key)
        if any(re.match(pattern, key) for pattern in UNUSED_KEYS[variant]):
            dropped.append(key)
        elif new_key is not None:
            converted[new_key] = tensor
        else:
            unknown.append(key)
    if dropped:
        logger.info("Dropping %d weights the %s model never uses: %s", len(dropped), variant, sorted(dropped))
    if unknown:
        raise ValueError(
            f"{len(unknown)} original weights have no counterpart in PixelReferForConditionalGeneration: "
            f"{sorted(unknown)}"
        )
    return converted, dropped


def _model_with_weights(
    config: PixelReferConfig,
    converted: dict[str, torch.Tensor],
    dtype: torch.dtype,
    progress: bool,
    allow_missing: bool = False,
) -> tuple[PixelReferForConditionalGeneration, list[str]]:
    """The model holding the converted weights in `dtype` (built on the meta device, no double allocation), and the
    names of the weights the original lacks: an error naming them, or with `allow_missing` left at their initial
    values (and reported). A weight of another shape than the model's is an error naming it."""
    with torch.device("meta"):
        model = PixelReferForConditionalGeneration(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
    missing = sorted(expected - set(converted))
    extra = sorted(set(converted) - expected)
    if extra:
        raise ValueError(f"Mapped weights that the model does not have: {extra}")
    _check_shapes(model, converted)
    if missing and not allow_missing:
        raise ValueError(
            f"{len(missing)} weights of the model are missing from the original checkpoint: {missing}; pass a "
            "complete release folder (or allow_missing=True to leave them at their initial values)."
        )
    if missing:
        logger.warning("Weights missing from the original checkpoint (left at their initial values): %s", missing)
        with torch.device("cpu"):
            fresh = PixelReferForConditionalGeneration(config).state_dict()
        converted = {**converted, **{k: fresh[k] for k in missing}}
    converted = {k: v.to(dtype) for k, v in tqdm(converted.items(), desc="Converting", disable=not progress)}
    model.load_state_dict(converted, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model, missing


def _check_shapes(model: PixelReferForConditionalGeneration, converted: dict[str, torch.Tensor]) -> None:
    """Refuses converted weights whose shape is not the model's (built from the checkpoint's config)."""
    expected = model.state_dict()
    wrong = [
        f"{key} has shape {list(tensor.shape)} but the model expects {list(expected[key].shape)}"
        for key, tensor in converted.items()
        if key in expected and tensor.shape != expected[key].shape
    ]
    if wrong:
        raise ValueError(
            f"{len(wrong)} weights do not fit the model that config.json describes: {'; '.join(wrong)}; pass the "
            "release's own config.json and weights (a shard of another model, or an edited config?)."
        )


def _read_original_config(src: Path) -> tuple[dict, str]:
    """The original `config.json` of `src` and its variant (`"full"` or `"lite"`); raises unless it is a PixelRefer
    release's."""
    config_file = src / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{src} has no config.json; pass an original PixelRefer release folder.")
    original = json.loads(config_file.read_text())
    if original.get("model_type") not in VARIANTS:
        raise ValueError(
            f"{config_file} has model_type {original.get('model_type')!r}; this converter handles "
            f"{sorted(VARIANTS)} (PixelRefer and PixelRefer-Lite with a Qwen2 LLM)."
        )
    variant = VARIANTS[original["model_type"]]
    logger.info("Found a PixelRefer %s checkpoint (%s) in %s", variant, original["model_type"], src)
    return original, variant


def _save_processor(src: Path, original: dict, config: PixelReferConfig, dst: Path) -> bool:
    """Saves the processor built from the tokenizer files of `src` into `dst`; False when `src` has none."""
    processor = build_processor(src, original, config)
    if processor is None:
        logger.warning("No tokenizer files in %s: the converted folder has no processor.", src)
        return False
    processor.save_pretrained(dst)
    return True


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    allow_missing: bool = False,
) -> ConversionReport:
    """Converts an original PixelRefer release folder `src` into a Transformers folder `dst`.

    Every original weight is mapped (or is a known unused one); an unknown key, a weight of another shape than the
    model's, and a weight the converted model has but the original lacks (`lm_head` of tied models is not one) fail
    the conversion, naming them, before anything is written.

    Args:
        src: original release folder, or the Hub id of one (e.g. `Alibaba-DAMO-Academy/PixelRefer-2B`), downloaded.
        dst: output folder (created).
        dtype: store the weights in this dtype; defaults to the original's `torch_dtype`.
        progress: show progress bars for large checkpoints.
        allow_missing: convert a checkpoint that lacks weights, leaving them at their initial values (they are
            logged and listed in the report's `missing_keys`).
    """
    src, dst = resolve_source(src), Path(dst)
    original, variant = _read_original_config(src)
    state_dict = load_original_state_dict(src, progress)
    config = build_config(src, original, state_dict)
    converted, dropped = map_state_dict(state_dict, variant)

    target_dtype = dtype or getattr(torch, original.get("torch_dtype", "float32"))
    config.dtype = target_dtype
    model, missing = _model_with_weights(config, converted, target_dtype, progress, allow_missing)
    model.generation_config = _generation_config(src, original)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)

    has_processor = _save_processor(src, original, config, dst)
    return ConversionReport(
        variant=variant,
        output_dir=dst,
        num_tensors=len(state_dict),
        dropped_keys=sorted(dropped),
        missing_keys=missing,
        has_processor=has_processor,
    )


def _generation_config(src: Path, original: dict) -> GenerationConfig:
    file = src / "generation_config.json"
    settings = json.loads(file.read_text()) if file.is_file() else {}
    settings = {k: v for k, v in settings.items() if not k.startswith("_") and k != "transformers_version"}
    settings.setdefault("bos_token_id", original.get("bos_token_id"))
    settings.setdefault("eos_token_id", original.get("eos_token_id"))
    settings.setdefault("pad_token_id", original.get("eos_token_id"))
    return GenerationConfig(**settings)


__all__ = [
    "ConversionReport",
    "convert_checkpoint",
    "load_original_state_dict",
    "map_key",
    "map_state_dict",
]
