"""Propagation of one prompt per object through a video with transformers' `Sam2VideoModel`.

`MaskletPropagator` propagates the prompts through a whole clip, forward from the prompt frame and backward to frame
0, with all objects tracked together in one inference session; `propagate_in_clip` does it for prompts on one frame
of a `VideoClip`, giving the processor's region items keyed by source frame.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession
from transformers.utils import logging

from ..processing.video import VideoClip
from .preprocessing import FrameInput, frames_as_arrays, postprocess_mask_logits, preprocess_frames
from .prompts import ObjectInputs, prompt_as_mask, prompts_to_inputs


logger = logging.get_logger(__name__)


def _square_image_size(config: Sam2VideoConfig) -> int:
    """The side of SAM2's square input (`config.image_size`, an int or an `[S, S]` pair)."""
    size = config.image_size
    if isinstance(size, numbers.Integral):
        return int(size)
    if len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    raise ValueError(f"only square SAM2 inputs are supported, the config has image_size={size}")


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
        preprocessed frames, `T x 3 x S x S` in the model's dtype (12.6 MB a frame in float32 at S = 1024), are kept
        on the CPU and moved to the model's device one at a time; the returned masks take `T x H x W` bytes per
        object.

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
        arrays = frames_as_arrays(frames)
        num_frames = len(arrays)
        size = arrays[0].shape[:2]
        objects = prompts_to_inputs(prompts, prompt_frame, num_frames, size, self.image_size)
        start_frame = min(inputs.frame for inputs in objects)
        logger.info(
            "Propagating %d object(s) through %d frames of %dx%d (HxW) from frame %d",
            len(objects),
            num_frames,
            *size,
            start_frame,
        )
        session = self._new_session(arrays, size)
        with torch.inference_mode():
            self._add_prompts(session, objects)
            return self._track(session, len(objects), start_frame, num_frames, size, progress)

    def _new_session(self, arrays: list[np.ndarray], size: tuple[int, int]) -> Sam2VideoInferenceSession:
        """An inference session over the preprocessed video, kept on the CPU, with its state on the model's device."""
        return Sam2VideoInferenceSession(
            video=preprocess_frames(arrays, self.image_size),
            video_height=size[0],
            video_width=size[1],
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device="cpu",
            dtype=self.dtype,
        )

    def _add_prompts(self, session: Sam2VideoInferenceSession, objects: list[ObjectInputs]) -> None:
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

    def _track(
        self,
        session: Sam2VideoInferenceSession,
        num_objects: int,
        start_frame: int,
        num_frames: int,
        size: tuple[int, int],
        progress: bool,
    ) -> list[dict[int, np.ndarray]]:
        """Runs the prompted session forward from `start_frame` to the last frame, then backward to frame 0.

        Returns:
            Each object's `(H, W)` uint8 masks by frame index, in frame order.
        """
        masklets: list[dict[int, np.ndarray]] = [{} for _ in range(num_objects)]
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
            found[prompt_frame] = prompt_as_mask(index, prompt, frames.shape[1:3])
        regions.append({"masklet": dict(sorted(found.items())), "frame": prompt_frame})
    return regions
