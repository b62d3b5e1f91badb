"""PixelRefer configuration and models."""

from .configuration_pixelrefer import PixelReferConfig
from .modeling_pixelrefer import PixelReferForConditionalGeneration, PixelReferModel
from .object_tokenizer import PixelReferObjectTokenizer


__all__ = ["PixelReferConfig", "PixelReferModel", "PixelReferForConditionalGeneration", "PixelReferObjectTokenizer"]
