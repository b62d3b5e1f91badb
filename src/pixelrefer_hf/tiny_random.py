"""A tiny PixelRefer with random weights and the real Qwen2.5 tokenizer, and a tiny random SAM2, built offline.

Their outputs are meaningless; they exist so that the whole pipeline (masklet propagation, regions, crops, vision
encoder, object tokens, LLM, generation) runs anywhere without a download: the defaults of the `pixelrefer` command
and the tests' models.
"""

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from .conversion.convert_original import original_processor
from .modeling import PixelReferConfig, PixelReferForConditionalGeneration
from .processing import PixelReferProcessor
from .processing.masklets import MaskletPropagator
from .processing.qwen_tokenizer import build_qwen2_5_tokenizer


TINY_MODEL_NAME = "tiny-random"


def tiny_config(object_only: bool = False, mask_num: int = 32) -> PixelReferConfig:
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
            "tie_word_embeddings": True,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
        },
        tie_word_embeddings=True,
        mask_num=mask_num,
        object_only=object_only,
        kmeans_iterations=3 if object_only else 5,
    )


def build_processor(object_only: bool = False, mask_num: int = 32) -> PixelReferProcessor:
    """Processor with the settings of the original release (DAMOVL image processor, offline Qwen2.5 tokenizer)."""
    return original_processor(build_qwen2_5_tokenizer(), mask_num=mask_num, object_only=object_only)


def build_tiny_random(
    seed: int = 0, object_only: bool = False, mask_num: int = 32
) -> tuple[PixelReferForConditionalGeneration, PixelReferProcessor]:
    """Tiny random-weight model and its processor (same seed, same weights)."""
    config = tiny_config(object_only=object_only, mask_num=mask_num)
    torch.manual_seed(seed)
    model = PixelReferForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.eos_token_id
    return model, build_processor(object_only=object_only, mask_num=mask_num)


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
    "TINY_MODEL_NAME",
    "build_processor",
    "build_tiny_random",
    "build_tiny_sam2",
    "tiny_config",
    "tiny_sam2_video_config",
]
