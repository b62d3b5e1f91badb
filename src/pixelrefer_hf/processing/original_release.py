"""The image processing settings of the original PixelRefer release (its DAMOVL image processor and pixel budget)."""

from transformers.models.video_llama_3.image_processing_pil_video_llama_3 import VideoLlama3ImageProcessorPil


# The DAMOVL preprocessor's settings the original keeps; its `max_pixels` is replaced when the encoder is loaded
# (see `original_pixel_budget`).
DAMOVL_PREPROCESSOR_DEFAULTS = {
    "min_pixels": 3136,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "patch_size": 14,
    "resample": 3,
}


def original_pixel_budget(max_vision_tokens: int, spatial_merge_size: int, patch_size: int) -> int:
    """Most pixels of one image (before the division among the images of a call) in the original release.

    Its encoder loader overrides the preprocessor's `max_pixels` with `mm_max_length * (merge * patch)**2`, and its
    preprocessing divides that by `(merge / image_downsampling)**2`; images and crops use `image_downsampling=1`.
    Video frames use `image_downsampling=merge`, i.e. `merge**2` times this budget (see `PixelReferProcessor`).
    """
    max_pixels = max_vision_tokens * (spatial_merge_size * patch_size) ** 2
    return int(max_pixels / spatial_merge_size**2)


def original_image_processor(
    preprocessor: dict | None = None, max_vision_tokens: int = 8192, spatial_merge_size: int = 2
) -> VideoLlama3ImageProcessorPil:
    """The DAMOVL image processor of the release (`preprocessor` overrides its defaults, e.g. from the encoder's
    `preprocessor_config.json`), with the pixel budget of the checkpoint's `mm_max_length` and `spatial_merge_size`."""
    settings = dict(DAMOVL_PREPROCESSOR_DEFAULTS)
    settings.update({k: v for k, v in (preprocessor or {}).items() if k in settings})
    settings["max_pixels"] = original_pixel_budget(max_vision_tokens, spatial_merge_size, settings["patch_size"])
    return VideoLlama3ImageProcessorPil(merge_size=1, **settings)


__all__ = ["DAMOVL_PREPROCESSOR_DEFAULTS", "original_image_processor", "original_pixel_budget"]
