"""A tiny PixelRefer with random weights and the real Qwen2.5 tokenizer, built offline in-process.

Its answers are meaningless; it exists so that the whole pipeline (regions, crops, vision encoder, object tokens,
LLM, generation) runs anywhere without a download: the default of the `pixelrefer` command and the tests' model.
"""

import torch
from transformers.models.video_llama_3.image_processing_pil_video_llama_3 import VideoLlama3ImageProcessorPil

from .modeling import PixelReferConfig, PixelReferForConditionalGeneration
from .processing import PixelReferProcessor
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
    image_processor = VideoLlama3ImageProcessorPil(
        min_pixels=3136, max_pixels=1857492, image_mean=[0.5] * 3, image_std=[0.5] * 3, merge_size=1
    )
    return PixelReferProcessor(
        image_processor,
        build_qwen2_5_tokenizer(),
        mask_num=mask_num,
        object_only=object_only,
        max_object_patches=50 if object_only else 100,
    )


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


__all__ = ["TINY_MODEL_NAME", "build_processor", "build_tiny_random", "tiny_config"]
