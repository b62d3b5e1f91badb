"""Masklets: one prompt per object on one video frame, turned into a binary mask on every frame by SAM2.

PixelRefer refers to an object in a video through its per-frame masks (a "masklet"). Users rarely draw those; they
click, draw a box or give one mask on one frame. `MaskletPropagator` wraps transformers' `Sam2VideoModel` to
propagate such prompts through a whole clip, and `propagate_in_clip` turns prompts on one frame of a `VideoClip`
into the processor's region items.

- `prompts`: checks of point, box and mask prompts, and their conversion to the model's input space.
- `preprocessing`: torchvision-free frame preprocessing and mask postprocessing, as `Sam2VideoProcessor` does them.
- `propagation`: `MaskletPropagator` (the inference session) and `propagate_in_clip`.
"""

from .preprocessing import FrameInput, postprocess_mask_logits, preprocess_frames
from .prompts import PROMPT_FORMS, MaskInput
from .propagation import MaskletPropagator, propagate_in_clip


__all__ = [
    "PROMPT_FORMS",
    "FrameInput",
    "MaskInput",
    "MaskletPropagator",
    "postprocess_mask_logits",
    "preprocess_frames",
    "propagate_in_clip",
]
