"""The demo's logic without its page: the media a visitor opened, the regions drawn on it, the question to the model.

An image is held as a one-frame video, so that both go one way: every drawn region is a SAM2 prompt (a point, a
box, or a brushed mask) on one frame, propagated by `propagate_in_clip` over the sampled frames into a masklet. A
question refers to the regions by number (`<region1>`, `<region2>`, ...); `Workspace.request` turns it into the
processor's inputs and reports, per region, the scale-adapted crop, scale factor and object-token count the model
receives. Every problem with what was uploaded, drawn or asked raises a `DemoError` naming it and what to do instead.
"""

import logging
import re
from argparse import ArgumentTypeError
from collections.abc import Iterator
from dataclasses import dataclass, field
from threading import Thread
from typing import Any

import cv2
import numpy as np
import torch
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin, TextIteratorStreamer

from ..cli import build_messages, parse_box, parse_point
from ..processing.object_crops import ObjectCrop
from ..processing.processing_pixelrefer import REGION_PLACEHOLDER
from ..processing.validation import binary_mask, pixel_box, pixel_points, require_foreground
from ..processing.video import VideoClip, load_video
from ..segmentation import MaskletPropagator, propagate_in_clip
from ..visualization import region_color


logger = logging.getLogger(__name__)

FULL_NAME, LITE_NAME = "PixelRefer", "PixelRefer-Lite"
# `<region2>` names region 2 (regions are numbered from 1, as on the page); a bare `<region>` the next one in order.
REFERENCE = re.compile(r"<region(\d*)>")
EXAMPLE_QUESTION = "What is <region1>?"
TINT = 0.45


class DemoError(ValueError):
    """A problem with what was uploaded, drawn or asked, shown on the page as one message."""


@dataclass
class DemoModels:
    """What the demo runs.

    models: `(model, processor)` by variant name (`FULL_NAME`, `LITE_NAME`), in the order the page offers them.
    segmenter: SAM2, for every drawn region.
    random_weights: the names of the models with random weights (the page says their output is meaningless).
    """

    models: dict[str, tuple[PreTrainedModel, ProcessorMixin]]
    segmenter: MaskletPropagator
    random_weights: list[str] = field(default_factory=list)


@dataclass
class DrawnRegion:
    """One region drawn on the page.

    prompt: what was drawn, `{"points": [[x, y]]}`, `{"box": [x0, y0, x1, y1]}` or `{"mask": (H, W) uint8}`.
    frame: the source frame it was drawn on (0 for an image).
    masklet: the object's `(H, W)` uint8 mask by source frame; SAM2's, except a brushed mask on its own frame.
    """

    prompt: dict
    frame: int
    masklet: dict[int, np.ndarray]

    @property
    def kind(self) -> str:
        return {"points": "point", "box": "box", "mask": "brush"}[next(iter(self.prompt))]

    def describe_prompt(self) -> str:
        """E.g. `point 320,200`, `box 10,20,200,180` or `brush 5120 px`."""
        if self.kind == "brush":
            return f"brush {int(np.count_nonzero(self.prompt['mask']))} px"
        values = self.prompt["box"] if self.kind == "box" else self.prompt["points"][0]
        return f"{self.kind} " + ",".join(f"{value:g}" for value in values)


@dataclass
class RegionReport:
    """What the model received of one `<region>` of the question.

    number: the region's number on the page.
    crop: its scale-adapted crop on the frame it was drawn on.
    frames: the source frames the model reads it on (Lite reads a video region on every frame of its masklet).
    num_tokens: its object tokens over those frames (`<REGION>` tokens in the prompt).
    """

    number: int
    crop: ObjectCrop
    frames: list[int]
    num_tokens: int


@dataclass
class Request:
    """A question ready for `stream_answer`: the processor's inputs and what each `<region>` became."""

    inputs: BatchFeature
    reports: list[RegionReport]


@dataclass
class Workspace:
    """The media a visitor opened and the regions drawn on it.

    clip: the sampled frames (an image is a clip of one frame).
    is_video: whether the media is a video.
    regions: the drawn regions, numbered from 1 in this order.
    pending_corner: the first corner `(x, y)` of a box being drawn by two clicks.
    """

    clip: VideoClip
    is_video: bool
    regions: list[DrawnRegion] = field(default_factory=list)
    pending_corner: tuple[int, int] | None = None

    @classmethod
    def from_image(cls, image: np.ndarray) -> "Workspace":
        """A workspace on an `(H, W, 3)` uint8 RGB image."""
        return cls(load_video(np.asarray(image)[None]), is_video=False)

    @classmethod
    def from_video(cls, path: str, fps: float) -> "Workspace":
        """A workspace on the frames of the video at `path`, sampled at `fps` frames per second."""
        if not fps or fps <= 0:
            raise DemoError(f"frames per second must be a number > 0, got {fps}; pass e.g. 1")
        try:
            return cls(load_video(path, fps=fps), is_video=True)
        except (ValueError, OSError) as error:
            raise DemoError(f"cannot use this video: {error}") from error

    def source_frame(self, position: int) -> int:
        """The source frame index of sampled frame `position` (a slider's value: a whole number, maybe a float)."""
        count = len(self.clip.indices)
        if not 0 <= position < count or position != int(position):
            raise DemoError(f"there is no sampled frame {position}; pass a frame position in 0..{count - 1}")
        return self.clip.indices[int(position)]

    def describe_frame(self, position: int) -> str:
        """E.g. `the image` or `frame 43 (1.4 s) of the video`."""
        frame = self.source_frame(position)
        if not self.is_video:
            return "the image"
        return f"frame {frame} ({self.clip.timestamps[int(position)]:.1f} s) of the video"

    def add(self, prompt: dict, position: int, segmenter: MaskletPropagator) -> DrawnRegion:
        """Draws a region on sampled frame `position` and segments it with SAM2 over the sampled frames.

        Args:
            prompt: `{"points": [[x, y]]}`, `{"box": [x0, y0, x1, y1]}` (pixels, x1/y1 exclusive) or
                `{"mask": (H, W) binary mask}` (a brushed region, kept as painted on its frame).
        """
        frame = self.source_frame(position)
        where = f"region {len(self.regions) + 1} on {self.describe_frame(position)}"
        size = self.clip.frame(frame).shape[:2]
        try:
            if "box" in prompt:
                pixel_box(prompt["box"], size, where)
            elif "points" in prompt:
                pixel_points(prompt["points"], None, size, where)
            else:
                prompt = {"mask": require_foreground(binary_mask(prompt["mask"], size, where), where)}
        except (ValueError, TypeError) as error:
            raise DemoError(str(error)) from error
        logger.info("Segmenting %s with SAM2 over %d frame(s)", where, len(self.clip.indices))
        masklet = propagate_in_clip(segmenter, self.clip, [prompt], frame)[0]["masklet"]
        if "mask" in prompt:
            masklet[frame] = prompt["mask"]
        region = DrawnRegion(prompt, frame, masklet)
        self.regions.append(region)
        self.pending_corner = None
        return region

    def add_corner(self, x: int, y: int, position: int, segmenter: MaskletPropagator) -> DrawnRegion | None:
        """A box drawn by two clicks on pixels: the first marks a corner, the second the opposite one and adds the
        box (both pixels inside it); returns the region, or None after the first click."""
        if self.pending_corner is None:
            self.pending_corner = (x, y)
            return None
        (x0, y0), self.pending_corner = self.pending_corner, None
        return self.add({"box": [min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1]}, position, segmenter)

    def remove_last(self) -> None:
        """Removes the last region drawn (or the pending box corner)."""
        if self.pending_corner is not None:
            self.pending_corner = None
        elif self.regions:
            self.regions.pop()

    def overlay(self, position: int) -> np.ndarray:
        """Sampled frame `position` with each region's mask on it tinted, outlined and numbered, and the pending box
        corner marked: `(H, W, 3)` uint8."""
        frame_index = self.source_frame(position)
        frame = self.clip.frame(frame_index).copy()
        thickness = max(2, round(max(frame.shape[:2]) / 320))
        for number, region in enumerate(self.regions, 1):
            mask = region.masklet.get(frame_index)
            if mask is None or not mask.any():
                continue
            color = region_color(number - 1)
            inside = mask > 0
            frame[inside] = ((1 - TINT) * frame[inside] + TINT * np.array(color)).astype(np.uint8)
            contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(frame, contours, -1, color, thickness)
            rows, cols = np.nonzero(inside)
            corner = (int(cols.min()), max(int(rows.min()), 12 * thickness))
            cv2.putText(frame, str(number), corner, cv2.FONT_HERSHEY_SIMPLEX, thickness / 2, color, thickness)
        if self.pending_corner is not None:
            cv2.drawMarker(frame, self.pending_corner, (255, 255, 255), cv2.MARKER_CROSS, 12 * thickness, thickness)
        return frame

    def regions_table(self) -> tuple[list[str], list[list[Any]]]:
        """The drawn regions as a table: header and rows (number, prompt, frame, mask pixels[, masklet frames])."""
        header = ["region", "drawn as", "frame", "mask pixels"] + (["masklet frames"] if self.is_video else [])
        rows = []
        for number, region in enumerate(self.regions, 1):
            row = [number, region.describe_prompt(), region.frame, int(np.count_nonzero(region.masklet[region.frame]))]
            if self.is_video:
                row.append(",".join(str(frame) for frame in region.masklet))
            rows.append(row)
        return header, rows

    def request(self, processor: ProcessorMixin, question: str) -> Request:
        """The processor's inputs for `question` about the drawn regions, and what each `<region>` became."""
        numbers = referenced_regions(question, len(self.regions))
        plain = REFERENCE.sub(REGION_PLACEHOLDER, question)
        regions = [self.regions[number - 1] for number in numbers]
        if self.is_video:
            media = {"type": "video", "video": self.clip}
            items = [{"masklet": region.masklet, "frame": region.frame} for region in regions]
        else:
            media = {"type": "image", "image": self.clip.frames[0]}
            items = [{"mask": region.masklet[0]} for region in regions]
        try:
            reports = [self._report(processor, number, region) for number, region in zip(numbers, regions)]
            inputs = processor.apply_chat_template(
                build_messages(media, plain, items), add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except ValueError as error:
            raise DemoError(str(error)) from error
        return Request(inputs, reports)

    def _report(self, processor: ProcessorMixin, number: int, region: DrawnRegion) -> RegionReport:
        """The crops of one region on the frames the model reads it on (Lite: every masklet frame of a video)."""
        frames = list(region.masklet) if processor.object_only and self.is_video else [region.frame]
        crops = {
            frame: processor.object_crops(self.clip.frame(frame), [{"mask": region.masklet[frame]}])[0]
            for frame in frames
        }
        return RegionReport(number, crops[region.frame], frames, sum(crop.num_tokens for crop in crops.values()))


def referenced_regions(question: str, num_regions: int) -> list[int]:
    """The numbers (from 1) of the regions `question` refers to, in order.

    `<regionN>` names region N; the k-th bare `<region>` names region k; a question without references is about
    every region, in drawing order.
    """
    if not question.strip():
        raise DemoError(f"the question is empty; type one about the numbered regions, e.g. {EXAMPLE_QUESTION}")
    if num_regions == 0:
        raise DemoError(
            "no region is drawn yet; click the image to add a point, click two corners to add a box, or paint "
            "with the brush, then ask"
        )
    references = REFERENCE.findall(question)
    if not references:
        return list(range(1, num_regions + 1))
    bare = iter(range(1, len(references) + 1))
    numbers = [int(reference) if reference else next(bare) for reference in references]
    wrong = [number for number in numbers if not 1 <= number <= num_regions]
    if wrong:
        drawn = "1 region is drawn" if num_regions == 1 else f"{num_regions} regions are drawn"
        raise DemoError(
            f"the question refers to region {wrong[0]} (it has {len(references)} region reference(s)), but {drawn}; "
            f"refer to the drawn regions (<region1> to <region{num_regions}>) or draw more"
        )
    return numbers


def parse_prompt(text: str) -> dict:
    """Typed coordinates: `"x,y"` -> a point prompt, `"x0,y0,x1,y1"` -> a box prompt (pixels, x1/y1 exclusive)."""
    parse = parse_point if text.count(",") == 1 else parse_box
    try:
        return parse(text.strip())
    except ArgumentTypeError as error:
        raise DemoError(f"{error}; type x,y for a point or x0,y0,x1,y1 for a box") from error


def stream_answer(
    model: PreTrainedModel, processor: ProcessorMixin, request: Request, max_new_tokens: int
) -> Iterator[str]:
    """Greedy answer to `request`, growing: yields the text so far after each decoded piece.

    Generation runs in a thread feeding transformers' `TextIteratorStreamer`; a failure there ends the stream and is
    raised as a `DemoError`.
    """
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failures: list[Exception] = []

    def generate() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    **request.inputs.to(model.device),
                    streamer=streamer,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                )
        except Exception as error:  # shown on the page by the caller
            failures.append(error)
            streamer.end()

    thread = Thread(target=generate, daemon=True)
    thread.start()
    answer = ""
    for piece in streamer:
        answer += piece
        yield answer
    thread.join()
    if failures:
        raise DemoError(f"the model failed while answering: {failures[0]}") from failures[0]
