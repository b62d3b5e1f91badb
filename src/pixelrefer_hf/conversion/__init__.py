"""Conversion of the original PixelRefer release checkpoints to the Transformers layout."""

from .convert_original import ConversionReport, convert_checkpoint


__all__ = ["ConversionReport", "convert_checkpoint"]
