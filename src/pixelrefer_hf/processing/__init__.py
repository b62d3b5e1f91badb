"""Region prompts, scale-adaptive object crops and the PixelRefer processor."""

from .object_crops import ObjectCrop, PixelReferRegionProcessor, crop_object
from .processing_pixelrefer import PixelReferProcessor
from .regions import region_to_mask, regions_to_masks


__all__ = [
    "ObjectCrop",
    "PixelReferProcessor",
    "PixelReferRegionProcessor",
    "crop_object",
    "region_to_mask",
    "regions_to_masks",
]
