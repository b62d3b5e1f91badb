"""Conversion of the original PixelRefer release checkpoints to the Transformers layout, and pushes to the Hub."""

from .convert_original import ConversionReport, convert_checkpoint
from .model_card import build_model_card
from .push import PushReport, push_checkpoint


__all__ = ["ConversionReport", "PushReport", "build_model_card", "convert_checkpoint", "push_checkpoint"]
