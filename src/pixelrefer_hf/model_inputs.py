"""Names of the model inputs the processor produces, shared by processing and modeling (no torch import here).

Their shapes are documented once, in `PixelReferModel.forward` (`PIXELREFER_INPUTS_DOCSTRING`) and in the README.
"""

IMAGE_INPUT_NAMES = ("pixel_values", "image_grid_thw", "image_merge_sizes")
VIDEO_INPUT_NAMES = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")
REGION_INPUT_NAMES = (
    "region_pixel_values",
    "region_grid_thw",
    "region_masks",
    "region_mask_hw",
    "region_boxes",
    "region_context_pixel_values",
    "region_context_grid_thw",
    "region_view_ids",
)

__all__ = ["IMAGE_INPUT_NAMES", "REGION_INPUT_NAMES", "VIDEO_INPUT_NAMES"]
