"""PixelRefer for Hugging Face Transformers.

Importing the package registers PixelRefer with `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText` and
`AutoProcessor`, so converted checkpoints load without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .modeling import PixelReferConfig, PixelReferForConditionalGeneration, PixelReferModel
from .processing import PixelReferProcessor


AutoConfig.register(PixelReferConfig.model_type, PixelReferConfig, exist_ok=True)
AutoModel.register(PixelReferConfig, PixelReferModel, exist_ok=True)
AutoModelForImageTextToText.register(PixelReferConfig, PixelReferForConditionalGeneration, exist_ok=True)
AutoProcessor.register(PixelReferConfig, PixelReferProcessor, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "PixelReferConfig",
    "PixelReferModel",
    "PixelReferForConditionalGeneration",
    "PixelReferProcessor",
]
