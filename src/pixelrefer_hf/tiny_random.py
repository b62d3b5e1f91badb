"""A tiny PixelRefer with random weights and the real Qwen2.5 tokenizer, and a tiny random SAM2, built offline.

Their outputs are meaningless; they exist so that the whole pipeline (masklet propagation, regions, crops, vision
encoder, object tokens, LLM, generation) runs anywhere without a download: the defaults of the `pixelrefer` command
and the tests' models. The tiny PixelRefer answers in plain English words that change with the regions asked about,
so that a demo shows words and a test comparing answers can tell regions apart.
"""

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from .modeling import PixelReferConfig, PixelReferForConditionalGeneration
from .processing import PixelReferProcessor
from .processing.qwen_tokenizer import build_qwen2_5_tokenizer
from .segmentation import MaskletPropagator


TINY_MODEL_NAME = "tiny-random"
TINY_LITE_MODEL_NAME = "tiny-random-lite"

# The only tokens the tiny model's LM head scores (each with a leading space, one token each in Qwen2.5).
TINY_VOCABULARY = (
    "a the this that one two red blue green white black small large tall left right top bottom middle person man "
    "woman dog cat car bus bridge tower sky water tree building road window light dark near far on under over with "
    "and of in is are it its has looks standing sitting walking holding next behind front side part view"
).split()


def tiny_config(object_only: bool = False, max_object_tokens: int = 32) -> PixelReferConfig:
    """PixelRefer shapes scaled down: SigLIP-NaViT-like encoder (32 wide, 2 layers), Qwen2 LLM (32 wide, 2 layers)."""
    return PixelReferConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 14,
        },
        text_config={
            "model_type": "qwen2",
            "vocab_size": 151669,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 32768,
            "tie_word_embeddings": False,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        tie_word_embeddings=False,
        max_object_tokens=max_object_tokens,
        object_only=object_only,
    )


def build_processor(object_only: bool = False, max_object_tokens: int = 32) -> PixelReferProcessor:
    """Processor with the settings of the original release (DAMOVL image processor, offline Qwen2.5 tokenizer)."""
    return PixelReferProcessor.from_original_release(
        build_qwen2_5_tokenizer(), max_object_tokens=max_object_tokens, object_only=object_only
    )


def build_tiny_random(
    seed: int = 0, object_only: bool = False, max_object_tokens: int = 32
) -> tuple[PixelReferForConditionalGeneration, PixelReferProcessor]:
    """Tiny random-weight model and its processor (same seed, same weights)."""
    config = tiny_config(object_only=object_only, max_object_tokens=max_object_tokens)
    torch.manual_seed(seed)
    model = PixelReferForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.eos_token_id
    processor = build_processor(object_only=object_only, max_object_tokens=max_object_tokens)
    _answer_in_words(model, processor.tokenizer, torch.Generator().manual_seed(seed))
    return model, processor


@torch.no_grad()
def _answer_in_words(model: PixelReferForConditionalGeneration, tokenizer, generator: torch.Generator) -> None:
    """Random weights that answer in words about the regions: the LM head scores only `TINY_VOCABULARY` (other rows
    are zero, so they never win), and the object projector and the LLM's attention have unit-gain random weights
    (std `gain / sqrt(fan_in)`; the default 0.02 makes the answer ignore the regions and repeat the last token)."""
    ids = tokenizer.convert_tokens_to_ids(["Ġ" + word for word in TINY_VOCABULARY])
    head = torch.zeros_like(model.lm_head.weight)
    head[ids] = torch.randn(len(ids), head.shape[1], generator=generator) / head.shape[1] ** 0.5
    model.lm_head.weight.copy_(head)
    projector = model.model.object_tokenizer.projector
    attentions = [layer.self_attn for layer in model.model.language_model.layers]
    for linear, gain in [(projector[0], 1.0), (projector[2], 1.0)] + [
        (proj, 3.0) for attn in attentions for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
    ]:
        linear.weight.normal_(0, gain / linear.weight.shape[1] ** 0.5, generator=generator)


def tiny_sam2_video_config(size: int = 64) -> Sam2VideoConfig:
    """A ~1.4 M parameter SAM2 video config with a `size` x `size` input.

    Constraints: the FPN / prompt encoder / mask decoder width must be a multiple of 64 larger than the memory
    dimension (`memory_encoder_output_channels`, fixed at 64) so object pointers split into memory tokens; every
    stage but the first starts with a pooling block, which cannot be a global-attention block; the rope feature
    size is that of the lowest-resolution feature map, `size // 16`.
    """
    hidden = 128
    vision_config = {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "image_size": [size, size],
            "hidden_size": 16,
            "num_attention_heads": 1,
            "blocks_per_stage": [1, 2, 2, 1],
            "embed_dim_per_stage": [16, 32, 64, 128],
            "num_attention_heads_per_stage": [1, 1, 1, 1],
            "window_size_per_stage": [4, 2, 2, 2],
            "global_attention_blocks": [4],
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": [128, 64, 32, 16],
        "backbone_feature_sizes": [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        "fpn_hidden_size": hidden,
    }
    return Sam2VideoConfig(
        vision_config=vision_config,
        image_size=size,
        prompt_encoder_config={"hidden_size": hidden, "image_size": size, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 128,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
        num_maskmem=3,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=hidden,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_num_layers=1,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=128,
    )


def build_tiny_sam2(seed: int = 0) -> MaskletPropagator:
    """Masklet propagator with a tiny random SAM2 video model (meaningless masks; for offline runs and tests)."""
    torch.manual_seed(seed)
    return MaskletPropagator(Sam2VideoModel(tiny_sam2_video_config()).eval())


__all__ = [
    "TINY_LITE_MODEL_NAME",
    "TINY_MODEL_NAME",
    "build_processor",
    "build_tiny_random",
    "build_tiny_sam2",
    "tiny_config",
    "tiny_sam2_video_config",
]
