"""Masklets: one prompt per object on one video frame, turned into a binary mask on every frame by SAM2.

PixelRefer refers to an object in a video through its per-frame masks (a "masklet"). Users rarely draw those; they
click, draw a box or give one mask on one frame. `MaskletPropagator` wraps transformers' `Sam2VideoModel` to
propagate such prompts through a whole clip, forward from the prompt frame and backward to frame 0, with all
objects tracked together in one inference session.

The torchvision-based `Sam2VideoProcessor` is not used: frames are resized, rescaled and normalised here exactly as
its video processor does (uint8 bilinear antialiased resize to the model's square input, `/255`, ImageNet mean and
std), point and box coordinates are scaled to the model's input size as its `_normalize_coordinates` does, and the
low-resolution mask logits are upsampled back to the frame size and thresholded at 0 as its `post_process_masks`
does.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from .regions import region_to_mask
from .video import VideoClip


logger = logging.getLogger(__name__)

FrameInput = Union[np.ndarray, Sequence[Union[np.ndarray, Image.Image]]]
MaskInput = Union[np.ndarray, torch.Tensor, Image.Image]

PROMPT_KINDS = ("mask", "box", "points")
PROMPT_KEYS = frozenset((*PROMPT_KINDS, "labels", "frame"))
PROMPT_FORMS = (
    '{"mask": <(H, W) binary mask>}, {"box": [x0, y0, x1, y1]} (pixels) or '
    '{"points": [[x, y], ...], "labels": [1, 0, ...]} (pixels; labels optional, 1 = object, 0 = background), '
    'each optionally with "frame": <frame index>'
)
# SAM's point labels for the top-left and bottom-right corners of a box prompt.
BOX_CORNER_LABELS = (2, 3)
# Mask prompts are resized to the model's input size and binarised at this value, as in Sam2VideoProcessor.
MASK_RESIZE_THRESHOLD = 0.5


@dataclass
class _ObjectInputs:
    """One object's prompt in the model's input space.

    Exactly one of `point_coords` (with `point_labels`) and `mask` is set.
    """

    frame: int
    point_coords: torch.Tensor | None = None  # (1, 1, N, 2) float32, pixels of the model's square input
    point_labels: torch.Tensor | None = None  # (1, 1, N) int32: 1 object, 0 background, 2/3 box corners
    mask: torch.Tensor | None = None  # (1, 1, S, S) float32 in {0, 1}


def _frames_as_arrays(frames: FrameInput) -> list[np.ndarray]:
    """Checks the video and returns its frames as `(H, W, 3)` uint8 arrays (views, no copies)."""
    if isinstance(frames, torch.Tensor):
        raise TypeError("frames must be a numpy array or a list of frames, not a torch tensor; pass tensor.numpy()")
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"frames must be a (T, H, W, 3) RGB uint8 array, got shape {frames.shape}; "
                "stack RGB frames of shape (H, W, 3) along a new first axis"
            )
        arrays = list(frames)
    elif isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
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
    else:
        raise TypeError(
            f"frames is a {type(frames).__name__}; pass a (T, H, W, 3) uint8 array or a list of frames "
            "((H, W, 3) uint8 arrays or PIL images)"
        )
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
    arrays = _frames_as_arrays(frames)
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


def _square_image_size(config: Sam2VideoConfig) -> int:
    """The side of SAM2's square input (`config.image_size`, an int or an `[S, S]` pair)."""
    size = config.image_size
    if isinstance(size, numbers.Integral):
        return int(size)
    if len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    raise ValueError(f"only square SAM2 inputs are supported, the config has image_size={size}")


def _as_float_array(index: int, name: str, value: Any) -> np.ndarray:
    """Converts a box or point list to a finite float64 array, or raises naming the object."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"object {index}: {name} must be numbers, got {value!r}; pass {PROMPT_FORMS}") from error
    if not np.isfinite(array).all():
        raise ValueError(f"object {index}: {name} {value!r} has non-finite values; pass finite pixel coordinates")
    return array


def _check_frame(index: int, frame: Any, num_frames: int, key: str) -> int:
    """Checks a prompt's frame index (given as `key`) against the video length."""
    if isinstance(frame, bool) or not isinstance(frame, numbers.Integral):
        raise TypeError(f"object {index}: {key} must be an int frame index, got {frame!r}")
    if not 0 <= frame < num_frames:
        raise ValueError(
            f"object {index}: {key}={frame} is outside the video of {num_frames} frames; "
            f"pass a frame index in 0..{num_frames - 1}"
        )
    return int(frame)


def _box_inputs(index: int, box: Any, size: tuple[int, int], scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A pixel box `[x0, y0, x1, y1]` as SAM corner points `(2, 2)` in model space and their labels `(2,)`."""
    height, width = size
    array = _as_float_array(index, "box", box)
    if array.shape != (4,):
        raise ValueError(f"object {index}: box {box!r} must have 4 numbers; pass [x0, y0, x1, y1] in pixels")
    x0, y0, x1, y1 = array
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"object {index}: box {box!r} has x1 <= x0 or y1 <= y0; pass [x0, y0, x1, y1] with x0 < x1 and y0 < y1"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"object {index}: box {box!r} lies outside the {width}x{height} (WxH) frame; "
            f"pass pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    return array.reshape(2, 2) * scale, np.array(BOX_CORNER_LABELS)


def _point_inputs(
    index: int, points: Any, labels: Any, size: tuple[int, int], scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel points `[[x, y], ...]` as `(N, 2)` points in model space and their `(N,)` labels."""
    height, width = size
    array = _as_float_array(index, "points", points)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
        raise ValueError(
            f"object {index}: points must have shape (N, 2) with N >= 1, got shape {array.shape}; "
            "pass [[x, y], ...] in pixels (one point is [[x, y]])"
        )
    outside = np.flatnonzero((array[:, 0] < 0) | (array[:, 0] > width) | (array[:, 1] < 0) | (array[:, 1] > height))
    if outside.size:
        raise ValueError(
            f"object {index}: point {outside[0]} {array[outside[0]].tolist()} lies outside the {width}x{height} "
            f"(WxH) frame; pass pixel coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    if labels is None:
        label_array = np.ones(len(array), dtype=np.int64)
    else:
        label_array = np.asarray(labels)
        if label_array.ndim != 1 or len(label_array) != len(array):
            raise ValueError(
                f"object {index}: {label_array.size} labels for {len(array)} points; "
                "pass one label per point (1 = object, 0 = background) or leave labels out"
            )
        if not np.isin(label_array, (0, 1)).all():
            raise ValueError(
                f"object {index}: labels {np.asarray(labels).tolist()} must be 1 (object) or 0 (background)"
            )
    return array * scale, label_array


def _mask_input(index: int, mask: MaskInput, size: tuple[int, int], image_size: int) -> torch.Tensor:
    """A binary `(H, W)` mask resized to the model's `(1, 1, S, S)` mask input, as Sam2VideoProcessor does."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    elif not isinstance(mask, np.ndarray):
        raise TypeError(
            f"object {index}: mask is a {type(mask).__name__}; pass an (H, W) binary numpy array, tensor or PIL image"
        )
    if mask.shape != size:
        raise ValueError(
            f"object {index}: mask has shape {mask.shape} but the frames are {size} (HxW); "
            "pass a binary mask of the frame's size"
        )
    if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"object {index}: mask is not binary (values {np.unique(mask)[:5].tolist()}...); "
            "pass a bool or {0, 1} mask (e.g. mask > 0)"
        )
    if not mask.any():
        raise ValueError(f"object {index}: mask is empty; pass a mask with at least one object pixel")
    mask_input = torch.from_numpy(mask.astype(np.float32))[None, None]
    if size != (image_size, image_size):
        mask_input = F.interpolate(
            mask_input, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        mask_input = (mask_input >= MASK_RESIZE_THRESHOLD).float()
        if not mask_input.any():
            logger.warning(
                "object %d: the mask vanishes when resized to %dx%d; its masklet will likely be empty",
                index,
                image_size,
                image_size,
            )
    return mask_input


def _object_inputs(
    index: int,
    prompt: Any,
    prompt_frame: int,
    num_frames: int,
    size: tuple[int, int],
    image_size: int,
) -> _ObjectInputs:
    """Checks one object's prompt and converts it to model inputs."""
    if not isinstance(prompt, Mapping):
        raise TypeError(f"object {index}: the prompt is a {type(prompt).__name__}; pass a dict: {PROMPT_FORMS}")
    unknown = sorted(set(prompt) - PROMPT_KEYS, key=str)
    if unknown:
        raise ValueError(f"object {index}: unknown prompt keys {unknown}; pass {PROMPT_FORMS}")
    kinds = [kind for kind in PROMPT_KINDS if kind in prompt]
    if len(kinds) != 1:
        found = f"several prompt kinds ({', '.join(kinds)})" if kinds else "no mask, box or points"
        raise ValueError(f"object {index}: the prompt has {found}; pass exactly one of {PROMPT_FORMS}")
    if "labels" in prompt and kinds[0] != "points":
        raise ValueError(f"object {index}: labels only go with points; drop them from the {kinds[0]} prompt")
    if "frame" in prompt:
        frame = _check_frame(index, prompt["frame"], num_frames, "frame")
    else:
        frame = _check_frame(index, prompt_frame, num_frames, "prompt_frame")

    if kinds[0] == "mask":
        return _ObjectInputs(frame=frame, mask=_mask_input(index, prompt["mask"], size, image_size))
    # Pixel (x, y) -> model input pixels, as Sam2VideoProcessor._normalize_coordinates.
    scale = np.array([image_size / size[1], image_size / size[0]])
    if kinds[0] == "box":
        coords, labels = _box_inputs(index, prompt["box"], size, scale)
    else:
        coords, labels = _point_inputs(index, prompt["points"], prompt.get("labels"), size, scale)
    return _ObjectInputs(
        frame=frame,
        point_coords=torch.tensor(coords, dtype=torch.float32)[None, None],
        point_labels=torch.tensor(labels, dtype=torch.int32)[None, None],
    )


class MaskletPropagator:
    """Propagates one prompt per object through a video with SAM2, giving each object a mask on every frame.

    Example:
        ```python
        propagator = MaskletPropagator.from_pretrained("facebook/sam2.1-hiera-tiny")
        masklets = propagator.propagate(frames, [{"box": [10, 20, 200, 180]}, {"points": [[320, 240]]}])
        masklets[0][5]  # (H, W) uint8 mask of object 0 on frame 5
        ```
    """

    def __init__(self, model: Sam2VideoModel):
        if not isinstance(model, Sam2VideoModel):
            raise TypeError(f"model is a {type(model).__name__}; pass a transformers Sam2VideoModel")
        self.model = model.eval()
        self.image_size = _square_image_size(model.config)

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_folder: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> MaskletPropagator:
        """Loads a SAM2 video checkpoint (e.g. `facebook/sam2.1-hiera-tiny` or a local folder).

        Args:
            model_id_or_folder: Hub id or folder of a `Sam2VideoModel` checkpoint.
            device: where to run; defaults to CUDA when available, else the CPU.
            dtype: weights and activations dtype.
            **kwargs: passed to `Sam2VideoModel.from_pretrained` (e.g. `revision`, `local_files_only`).
        """
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = Sam2VideoModel.from_pretrained(model_id_or_folder, dtype=dtype, **kwargs)
        logger.info("Loaded SAM2 video model %s on %s (%s)", model_id_or_folder, device, dtype)
        return cls(model.to(device))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def propagate(
        self,
        frames: FrameInput,
        prompts: Sequence[Mapping[str, Any]],
        *,
        prompt_frame: int = 0,
        progress: bool = True,
    ) -> list[dict[int, np.ndarray]]:
        """Turns one prompt per object into a masklet: that object's binary mask on every frame.

        All objects are tracked together in one SAM2 inference session: forward from the earliest prompt frame to
        the last frame, then backward from it to frame 0; an object prompted on a later frame is tracked through the
        frames before it from the memory of its own prompt, as SAM2's `propagate_in_video` does. The video's
        preprocessed frames,
        `T x 3 x S x S` in the model's dtype (12.6 MB a frame in float32 at S = 1024), are kept on the CPU and
        moved to the model's device one at a time; the returned masks take `T x H x W` bytes per object.

        Args:
            frames: the video, a `(T, H, W, 3)` uint8 RGB array or a list of `(H, W, 3)` uint8 arrays or PIL
                images.
            prompts: one dict per object with exactly one of `{"mask": (H, W) binary array/tensor/PIL image}`,
                `{"box": [x0, y0, x1, y1]}` or `{"points": [[x, y], ...], "labels": [1, 0, ...]}` (pixel
                coordinates; labels default to all 1 = object, 0 marks background), optionally `"frame": k` to
                prompt on frame k instead of `prompt_frame`.
            prompt_frame: the frame the prompts are drawn on, unless a prompt gives its own `"frame"`.
            progress: show a progress bar over frames.

        Returns:
            One dict per object, in prompt order, mapping every frame index `0..T-1` to an `(H, W)` uint8 mask
            with values in {0, 1}.

        Raises:
            TypeError, ValueError: for malformed frames or prompts, naming the frame or object and what to pass.
        """
        arrays = _frames_as_arrays(frames)
        num_frames = len(arrays)
        size = arrays[0].shape[:2]
        if isinstance(prompts, (Mapping, str)) or not isinstance(prompts, Sequence):
            raise TypeError(
                f"prompts is a {type(prompts).__name__}; pass a list with one prompt dict per object "
                "(wrap a single prompt in a list)"
            )
        if not prompts:
            raise ValueError(f"no prompts: pass one prompt per object, each {PROMPT_FORMS}")
        objects = [
            _object_inputs(index, prompt, prompt_frame, num_frames, size, self.image_size)
            for index, prompt in enumerate(prompts)
        ]
        start_frame = min(inputs.frame for inputs in objects)
        logger.info(
            "Propagating %d object(s) through %d frames of %dx%d (HxW) from frame %d",
            len(objects),
            num_frames,
            *size,
            start_frame,
        )

        session = Sam2VideoInferenceSession(
            video=preprocess_frames(arrays, self.image_size),
            video_height=size[0],
            video_width=size[1],
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device="cpu",
            dtype=self.dtype,
        )
        masklets: list[dict[int, np.ndarray]] = [{} for _ in objects]
        with torch.inference_mode():
            self._add_prompts(session, objects)
            with tqdm(total=num_frames, desc="Propagating masklets", unit="frame", disable=not progress) as bar:
                # The backward pass starts by re-running the start frame, which the forward pass already gave.
                for reverse in (False, True):
                    for output in self.model.propagate_in_video_iterator(
                        session, start_frame_idx=start_frame, reverse=reverse
                    ):
                        if output.frame_idx in masklets[0]:
                            continue
                        masks = postprocess_mask_logits(output.pred_masks, size)
                        for position, obj_id in enumerate(output.object_ids):
                            masklets[obj_id][output.frame_idx] = masks[position]
                        bar.update()
        return [dict(sorted(masklet.items())) for masklet in masklets]

    def _add_prompts(self, session: Sam2VideoInferenceSession, objects: list[_ObjectInputs]) -> None:
        """Adds every object's prompt to the session and runs the model on its prompt frame.

        Object `i` gets `obj_id = i`. Objects are registered one prompt frame at a time, in frame order: running
        the model on a frame processes every registered object, and an object without a prompt yet would have no
        memory to track from.
        """
        for frame in sorted({inputs.frame for inputs in objects}):
            obj_ids = [obj_id for obj_id, inputs in enumerate(objects) if inputs.frame == frame]
            for obj_id in obj_ids:
                inputs = objects[obj_id]
                obj_idx = session.obj_id_to_idx(obj_id)
                if inputs.mask is not None:
                    session.add_mask_inputs(obj_idx, frame, inputs.mask)
                else:
                    session.add_point_inputs(
                        obj_idx, frame, {"point_coords": inputs.point_coords, "point_labels": inputs.point_labels}
                    )
            session.obj_with_new_inputs = list(obj_ids)
            logger.debug("Prompting object(s) %s on frame %d", obj_ids, frame)
            self.model(session, frame_idx=frame)


def propagate_in_clip(
    propagator: MaskletPropagator,
    clip: VideoClip,
    prompts: Sequence[dict],
    prompt_frame: int,
    *,
    progress: bool = True,
) -> list[dict]:
    """Region items for the processor from prompts on one frame of a video.

    Propagates `prompts` (one per object, as `MaskletPropagator.propagate` takes them) given on source frame
    `prompt_frame` through the clip's sampled frames (and the prompt frame, which need not be sampled; load the clip
    with `extra_frames=[prompt_frame]`). Frames where an object is not found (empty mask) are left out of its
    masklet; on the prompt frame an empty prediction falls back to the prompt itself (mask, box, or squares around
    the points).

    Returns:
        One `{"masklet": {source frame index: (H, W) mask}, "frame": prompt_frame}` per object: Lite uses every
        frame, the full model the prompt frame.
    """
    order = sorted(set(clip.indices) | {prompt_frame})
    try:
        frames = np.stack([clip.frame(i) for i in order])
    except KeyError as error:
        raise ValueError(f"prompt frame {prompt_frame}: {error.args[0]}") from None
    masklets = propagator.propagate(frames, prompts, prompt_frame=order.index(prompt_frame), progress=progress)
    regions = []
    for index, (prompt, masklet) in enumerate(zip(prompts, masklets)):
        found = {order[position]: mask for position, mask in masklet.items() if mask.any()}
        if prompt_frame not in found:
            found[prompt_frame] = _prompt_as_mask(index, prompt, frames.shape[1:3])
        regions.append({"masklet": dict(sorted(found.items())), "frame": prompt_frame})
    return regions


def _prompt_as_mask(index: int, prompt: dict, size: tuple[int, int], point_radius: int = 14) -> np.ndarray:
    """The object's mask on its prompt frame when the model finds nothing there: the prompt mask or box itself, or
    squares of `2 * point_radius` pixels around the positive points."""
    if "mask" in prompt or "box" in prompt:
        key = "mask" if "mask" in prompt else "box"
        return region_to_mask({key: prompt[key]}, size, region_index=index)
    points = np.asarray(prompt["points"], dtype=float).reshape(-1, 2)
    labels = np.asarray(prompt.get("labels", [1] * len(points))).reshape(-1)
    mask = np.zeros(size, dtype=np.uint8)
    for x, y in points[labels == 1]:
        mask[
            max(0, int(y) - point_radius) : int(y) + point_radius,
            max(0, int(x) - point_radius) : int(x) + point_radius,
        ] = 1
    if not mask.any():
        raise ValueError(f"object {index}: the segmenter found nothing and the prompt has no positive point.")
    logger.warning("object %d: the segmenter found nothing at the points; using squares around them.", index)
    return mask
