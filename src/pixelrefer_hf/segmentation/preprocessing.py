"""SAM2 frame preprocessing and mask postprocessing without torchvision.

The torchvision-based `Sam2VideoProcessor` is not used: frames are resized, rescaled and normalised here exactly as
its video processor does (uint8 bilinear antialiased resize to the model's square input, `/255`, ImageNet mean and
std), and the low-resolution mask logits are upsampled back to the frame size and thresholded at 0 as its
`post_process_masks` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


FrameInput = Union[np.ndarray, Sequence[Union[np.ndarray, Image.Image]]]


def _frame_list(frames: FrameInput) -> list[np.ndarray]:
    """The video's frames as `(H, W, 3)` arrays, checking the container and each frame's type and shape."""
    if isinstance(frames, torch.Tensor):
        raise TypeError("frames must be a numpy array or a list of frames, not a torch tensor; pass tensor.numpy()")
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be a (T, H, W, 3) RGB uint8 array, got shape {frames.shape}; "
                "stack RGB frames of shape (H, W, 3) along a new first axis"
            )
        return list(frames)
    if not isinstance(frames, Sequence) or isinstance(frames, (str, bytes)):
        raise TypeError(
            f"frames is a {type(frames).__name__}; pass a (T, H, W, 3) uint8 array or a list of frames "
            "((H, W, 3) uint8 arrays or PIL images)"
        )
    arrays = []
    for index, frame in enumerate(frames):
        if isinstance(frame, Image.Image):
            frame = np.asarray(frame.convert("RGB"))
        elif not isinstance(frame, np.ndarray):
            raise TypeError(
                f"frame {index} is a {type(frame).__name__}; pass (H, W, 3) uint8 numpy arrays or PIL images"
            )
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"frame {index} has shape {frame.shape}; pass an RGB frame of shape (H, W, 3)")
        arrays.append(frame)
    return arrays


def frames_as_arrays(frames: FrameInput) -> list[np.ndarray]:
    """Checks the video and returns its frames as `(H, W, 3)` uint8 arrays (views, no copies)."""
    arrays = _frame_list(frames)
    if not arrays:
        raise ValueError("no frames: pass at least one frame")
    height, width = arrays[0].shape[:2]
    for index, frame in enumerate(arrays):
        if frame.dtype != np.uint8:
            raise TypeError(
                f"frame {index} has dtype {frame.dtype}; pass uint8 RGB frames with values 0..255 "
                "(e.g. (frame * 255).round().astype(np.uint8) for frames in [0, 1])"
            )
        if frame.shape[:2] != (height, width):
            raise ValueError(
                f"frame {index} is {frame.shape[0]}x{frame.shape[1]} (HxW) but frame 0 is {height}x{width}; "
                "resize all frames of a video to one size"
            )
    return arrays


def preprocess_frames(frames: FrameInput, image_size: int) -> torch.Tensor:
    """Turns video frames into SAM2 pixel values, as `Sam2VideoVideoProcessor` does.

    Each frame is resized on the CPU in uint8 with an antialiased bilinear filter to `(image_size, image_size)`
    (no aspect-ratio preservation, as in SAM2), rescaled by 1/255 and normalised with the ImageNet mean and std.

    Args:
        frames: a `(T, H, W, 3)` uint8 RGB array, or a list of `(H, W, 3)` uint8 arrays or PIL images.
        image_size: side `S` of the model's square input.

    Returns:
        `(T, 3, S, S)` float32 tensor on the CPU.
    """
    arrays = frames_as_arrays(frames)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(3, 1, 1)
    pixel_values = torch.empty(len(arrays), 3, image_size, image_size, dtype=torch.float32)
    for index, frame in enumerate(arrays):
        writable = np.require(frame, requirements=("C_CONTIGUOUS", "WRITEABLE"))  # torch wants writable arrays
        channels_first = torch.from_numpy(writable).permute(2, 0, 1).unsqueeze(0)
        resized = F.interpolate(
            channels_first, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        pixel_values[index] = (resized[0].float() / 255.0 - mean) / std
    return pixel_values


def postprocess_mask_logits(mask_logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Upsamples low-resolution SAM2 mask logits to the frame size and binarises them at 0.

    Matches `Sam2VideoProcessor.post_process_masks` (bilinear, `align_corners=False`, `logits > 0`).

    Args:
        mask_logits: `(N, 1, h, w)` logits of N objects, on any device and dtype.
        size: the frame's `(H, W)`.

    Returns:
        `(N, H, W)` uint8 numpy array with values in {0, 1}.
    """
    upsampled = F.interpolate(mask_logits.float(), size=size, mode="bilinear", align_corners=False)
    return (upsampled[:, 0] > 0).to(torch.uint8).cpu().numpy()
