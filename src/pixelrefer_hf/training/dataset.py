"""Training data in the original release's format: files -> samples -> chat messages -> processor inputs and labels.

The format is that of the original `PixelRefer/pixelrefer/train.py` and its Lite twin. A `.json` file holds a list of
samples, a `.jsonl` file one sample per line. A sample has `conversations` (`[{"from": "human" | "gpt" | ...,
"value": text}, ...]`), optionally an `image` (a path or a list of paths) or a `video` (a path or a list of one path:
a video file or a folder of frame images), `masks` (one entry per object, i.e. per `<region>` of the conversation) and
`height`/`width`. Media paths are relative to a media root (the original's `--data_folder`). An image object is a
COCO mask annotation: a compressed RLE `{"size": [H, W], "counts": str}`, an uncompressed RLE `{"size": [H, W],
"counts": [...]}` or polygons `[[x0, y0, x1, y1, ...], ...]`; the last two need the sample's `height`/`width`. A
video object is `{"<frame index>": annotation, ...}`, keyed by frames of the source video (or of the sorted frame
folder). Other keys are ignored.

As in the original: leading turns before the first `"human"` or `"system"` turn are dropped; `"human"` turns are
user turns and every other turn (`"gpt"`, also `"system"`) an assistant turn; `<image>`/`<video>` tags in human turns
mark where the media go and the text around a tag is stripped; `<region>` placeholders are matched with the objects
in order, walking forward through the turns (replies included). Lite (`object_only`) also strips every reply when the
sample has masks, and its processor drops the media placeholders (a Lite sample without masks trains on its text).

Where the original is broken or silent, this module does the right thing instead, and says so:

- Bad data raises a [`BadSampleError`] naming the file, the sample and the fix (or is skipped, with a warning, by
  `PixelReferTrainingDataset(..., skip_bad_samples=True)`); the original prints the exception and silently trains on
  a random other sample. Every check runs when a sample is loaded, and [`check_data`] runs them all up front.
- A plain-string `video` works like a one-element list (the original full model raises `Unsupported video format`).
  A list of several frame files (the original's pre-sampled frames with `timestamps` and `masked_video`) is refused.
- Without a media tag, one tag per image (or one `<video>`) is prepended to the first human turn (the original
  prepends one tag to turn 0, even a `"system"` turn). A tag count other than one per image, a tag in a reply, and a
  tag without its media are refused (the original's processor fails on them or reads them as text).
- Several images: the original puts every mask on image 0 (`mask_ids.append(0)`); so does this module, and it checks
  the masks against image 0's size.
- The `<region>` count must equal the object count (the original raises `IndexError` with more masks and leaves
  extra `<region>` as text). For video, one `<region>` per object: the full model reads each object on its key frame,
  its earliest annotated frame (the original counts every (object, frame) pair as a mask, which breaks with several
  frames per object); Lite reads every frame (a masklet). Empty frame masks are dropped, as Lite does; an object
  without a non-empty frame, and an empty image mask (the original crashes), are refused.
- `height`/`width` must match the actual image (or frame) size; polygons and uncompressed RLE need them.
- A conversation without a reply is refused (the original trains on it with every label -100).
- A sample with both `image` and `video` is refused (the original ignores the video); streaming samples (`stream`)
  are not supported; blank lines of a `.jsonl` file are skipped (the original raises).
"""

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers.utils import logging

from ..media_paths import resolve_media_path
from ..processing import validation
from ..processing.processing_pixelrefer import IMAGE_TOKEN, REGION_PLACEHOLDER, VIDEO_PLACEHOLDER
from ..processing.regions import region_to_mask
from ..processing.video import open_video


logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
DATA_SUFFIXES = (".json", ".jsonl")
IN_MEMORY = "<samples>"
# `region_to_mask`'s verdicts on masks without a foreground pixel (empty video frames are dropped, not refused).
EMPTY_MASK = re.compile(r"is empty \(no pixel set\)|covers no pixel")
MASK_FORMS = '{"size": [H, W], "counts": str | [...]} (COCO RLE) or [[x0, y0, x1, y1, ...], ...] (polygons)'


@dataclass(frozen=True)
class TrainingSample:
    """One raw sample (a decoded JSON value) and where it came from: its file, its index in the file, and for a
    `.jsonl` file its line (1-based)."""

    data: Any
    source: str = IN_MEMORY
    index: int = 0
    line: int | None = None

    @property
    def where(self) -> str:
        return f"{self.source}, sample {self.index}" + ("" if self.line is None else f" (line {self.line})")


class BadSampleError(ValueError):
    """A training sample that cannot be used; the message names its file, its index, what is wrong and the fix.
    `sample` is the [`TrainingSample`] (None after unpickling)."""

    def __init__(self, message: str, sample: TrainingSample | None = None):
        super().__init__(message if sample is None else f"{sample.where}: {message}")
        self.sample = sample


class _Invalid(ValueError):
    """What is wrong with a sample, raised while parsing it; `sample_to_messages` turns it into a `BadSampleError`."""


@dataclass
class _Media:
    """The media of a sample: `kind` ("image", "video" or None), their paths, the `(H, W)` of each image (of the
    video's frames), and the video's frame count."""

    kind: str | None = None
    paths: list[Path] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    num_frames: int = 0


def load_samples(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[TrainingSample]:
    """Reads training files (`.json`: a list of samples, `.jsonl`: one sample per line), in order.

    Raises a `ValueError` naming the file (and line) for another suffix, an unreadable file, invalid JSON or a `.json`
    top level that is not a list. Samples themselves are checked when they are loaded (see [`sample_to_messages`]).
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return [sample for path in paths for sample in _read_data_file(Path(path))]


def _read_data_file(path: Path) -> list[TrainingSample]:
    if path.suffix not in DATA_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported training data file; pass .json files (a list of samples) or .jsonl files (one "
            "sample per line)."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the file ({error}); check the path and that it is UTF-8.") from None
    if path.suffix == ".jsonl":
        lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        return [
            TrainingSample(_decode_json(line, path, number), str(path), index, number)
            for index, (number, line) in enumerate(lines)
        ]
    samples = _decode_json(text, path)
    if not isinstance(samples, list):
        raise ValueError(
            f"{path}: the top level is a JSON {type(samples).__name__}, but a .json training file holds a list of "
            "samples; wrap the samples in [...] (or write one sample per line to a .jsonl file)."
        )
    return [TrainingSample(sample, str(path), index) for index, sample in enumerate(samples)]


def _decode_json(text: str, path: Path, line: int | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        at = f"line {line}, column {error.colno}" if line else f"line {error.lineno}, column {error.colno}"
        raise ValueError(f"{path}: invalid JSON at {at} ({error.msg}); fix the file.") from None


def sample_to_messages(
    sample: TrainingSample | dict,
    media_root: str | os.PathLike,
    *,
    object_only: bool,
    allow_outside_media_root: bool = False,
) -> list[dict]:
    """One raw sample -> the chat messages of `PixelReferProcessor.apply_chat_template`.

    Args:
        sample: a [`TrainingSample`] of `load_samples`, or a sample dict.
        media_root: folder the media paths of the sample are relative to.
        object_only: PixelRefer-Lite (each video object read on every frame of its masks) or the full model (on its
            earliest frame).
        allow_outside_media_root: accept absolute media paths and paths that leave `media_root` with `..`.
    Returns:
        `[{"role": "user" | "assistant", "content": [item, ...]}, ...]` with `{"type": "text"}`, `{"type": "image",
        "image": path}`, `{"type": "video", "video": path}` and `{"type": "region", "mask": (H, W) uint8, ...}` items
        (`"image_index": 0` with several images; `"frame"` (full model) or `"masklet": {frame: mask}` (Lite) on a
        video).
    Raises:
        [`BadSampleError`] naming the sample's file and index, what is wrong and the fix.
    """
    if not isinstance(sample, TrainingSample):
        sample = TrainingSample(sample)
    try:
        return _messages(sample.data, Path(media_root), object_only, allow_outside_media_root)
    except _Invalid as error:
        raise BadSampleError(str(error), sample) from None


def _messages(data: Any, media_root: Path, object_only: bool, allow_outside: bool) -> list[dict]:
    if not isinstance(data, dict):
        raise _Invalid(
            f"a sample is a JSON object {{...}}, got a {type(data).__name__}; give each sample as an object with "
            '"conversations" (and "image" or "video", "masks")'
        )
    if data.get("stream"):
        raise _Invalid('streaming samples ("stream") are not supported; remove them from the training data')
    turns = _conversation(data)
    media = _media(data, media_root, allow_outside)
    declared = _declared_size(data, media.sizes[0], media.kind) if media.kind else None
    regions = _regions(data, media, declared, object_only)
    return _chat(turns, media, regions, strip_replies=object_only and bool(regions))


def _conversation(data: dict) -> list[dict]:
    """The turns of a sample, without the leading turns that are neither "human" nor "system" (as the original)."""
    conversation = data.get("conversations")
    form = '[{"from": "human" | "gpt", "value": text}, ...]'
    if conversation is None:
        raise _Invalid(f'the sample has no "conversations"; add its turns as "conversations": {form}')
    if not isinstance(conversation, list) or not all(
        isinstance(turn, dict) and isinstance(turn.get("from"), str) and isinstance(turn.get("value"), str)
        for turn in conversation
    ):
        raise _Invalid(f'"conversations" must be a list of turns {form}, got {conversation!r:.80}')
    start = next((i for i, turn in enumerate(conversation) if turn["from"] in ("human", "system")), len(conversation))
    turns = conversation[start:]
    if len(turns) < 2:
        raise _Invalid(
            f'"conversations" has {len(turns)} turn(s) from the first "human" turn on (leading replies are dropped); '
            'give at least a "human" turn and a reply'
        )
    if all(turn["from"] == "human" for turn in turns):
        raise _Invalid('"conversations" has no reply to learn from (every turn is "human"); add a "gpt" turn')
    return turns


def _media(data: dict, media_root: Path, allow_outside: bool) -> _Media:
    image, video = data.get("image"), data.get("video")
    if image is not None and video is not None:
        raise _Invalid('the sample has both "image" and "video"; a sample holds one of them, split it into two')
    if image is not None:
        paths = [_media_path(name, media_root, allow_outside) for name in _path_list(image, "image")]
        return _Media("image", paths, [_image_size(path) for path in paths])
    if video is None:
        return _Media()
    names = _path_list(video, "video")
    if len(names) > 1:
        raise _Invalid(
            f'"video" lists {len(names)} files; pre-sampled frame files (with "timestamps" and "masked_video") are '
            'not supported: give "video" as one path (or a list of one path) to a video file or a folder of frames'
        )
    path = _media_path(names[0], media_root, allow_outside)
    num_frames, size = _video_info(path)
    return _Media("video", [path], [size], num_frames)


def _path_list(value: Any, key: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(name, str) and name for name in names):
        raise _Invalid(f'"{key}" must be a path (a string) or a list of paths, got {value!r:.80}')
    return names


def _media_path(name: str, media_root: Path, allow_outside: bool) -> Path:
    """`name` under `media_root` (see [`~pixelrefer_hf.media_paths.resolve_media_path`]), checked to exist."""
    try:
        path = resolve_media_path(name, media_root, allow_outside=allow_outside)
    except ValueError as error:
        raise _Invalid(str(error)) from None
    if not path.exists():
        raise _Invalid(f"media file {str(path)!r} does not exist; check the media root ({media_root}) and the path")
    return path


def _image_size(path: Path) -> tuple[int, int]:
    """`(H, W)` of an image as it is loaded (after its EXIF orientation), read from its header."""
    try:
        return validation.image_file_size(path, "the sample")
    except ValueError as error:
        raise _Invalid(str(error).removeprefix("the sample: ")) from None


def _video_info(path: Path) -> tuple[int, tuple[int, int]]:
    """Frame count and frame `(H, W)` of a video file or frame folder, from its header (no frame is decoded)."""
    try:
        with open_video(path) as source:
            return source.num_frames, source.frame_size
    except ValueError as error:
        raise _Invalid(str(error)) from None


def _regions(data: dict, media: _Media, declared: tuple[int, int] | None, object_only: bool) -> list[dict]:
    """The region items of a sample's objects (`masks`), in order; `declared` is the sample's checked
    `(height, width)`, if it gives them."""
    masks = data.get("masks")
    if masks is None or masks == []:
        return []
    if not isinstance(masks, list):
        raise _Invalid(f'"masks" must be a list with one entry per object (per <region>), got {masks!r:.80}')
    if media.kind is None:
        raise _Invalid('the sample has "masks" but no "image" or "video"; add the media the masks are drawn on')
    try:
        validation.region_count(len(masks), "the sample")
    except ValueError as error:
        raise _Invalid(str(error).removeprefix("the sample: ")) from None
    if media.kind == "image":
        on_image = {"image_index": 0} if len(media.paths) > 1 else {}
        return [
            {"type": "region", "mask": _mask(mask, media.sizes[0], declared, f"object {i}"), **on_image}
            for i, mask in enumerate(masks)
        ]
    return [_video_region(frames, media, declared, f"object {i}", object_only) for i, frames in enumerate(masks)]


def _declared_size(data: dict, actual: tuple[int, int], kind: str) -> tuple[int, int] | None:
    """The sample's `(height, width)`, checked to be the media's; None when the sample gives neither."""
    if "height" not in data and "width" not in data:
        return None
    size = (data.get("height"), data.get("width"))
    if not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size):
        raise _Invalid(f'"height" and "width" must both be positive integers (pixels), got {size}')
    if size != actual:
        raise _Invalid(
            f'"height"/"width" say (H, W) = {size} but the {kind} is {actual}; fix them (or the media path)'
        )
    return size


def _mask(
    annotation: Any, size: tuple[int, int], declared: tuple[int, int] | None, what: str, allow_empty: bool = False
) -> np.ndarray | None:
    """`(H, W)` uint8 mask of one COCO annotation on media of `size`; None for an empty mask when `allow_empty`."""
    if isinstance(annotation, list):
        form, region = "a polygon", {"polygon": annotation}
    elif isinstance(annotation, dict) and "counts" in annotation:
        form = "a compressed RLE" if isinstance(annotation["counts"], str) else "an uncompressed RLE"
        region = {"rle": {key: annotation[key] for key in ("size", "counts") if key in annotation}}
    else:
        raise _Invalid(f"{what}: unknown mask annotation {annotation!r:.80}; give {MASK_FORMS}")
    if form != "a compressed RLE" and declared is None:
        raise _Invalid(f'{what}: {form} needs the sample\'s "height" and "width" (the image size in pixels); add them')
    try:
        return region_to_mask(region, size)
    except (TypeError, ValueError) as error:
        reason = str(error).removeprefix("sample 0, region 0: ")
        if allow_empty and EMPTY_MASK.search(reason):
            return None
        raise _Invalid(f"{what}: {reason}") from None


def _video_region(frames: Any, media: _Media, declared: tuple[int, int] | None, what: str, object_only: bool) -> dict:
    """The region item of a video object `{"<frame index>": annotation}`: Lite's masklet or the full model's key
    frame (the earliest); frames with empty masks are dropped."""
    if not isinstance(frames, dict) or not frames:
        raise _Invalid(f'{what}: a video object is {{"<frame index>": mask annotation, ...}}, got {frames!r:.80}')
    masklet = {}
    for key, annotation in frames.items():
        frame = _frame_index(key, media.num_frames, what)
        mask = _mask(annotation, media.sizes[0], declared, f"{what}, frame {frame}", allow_empty=True)
        if mask is not None:
            masklet[frame] = mask
    if not masklet:
        raise _Invalid(f"{what}: the mask of every frame is empty; remove the object or fix its masks")
    if object_only:
        return {"type": "region", "masklet": masklet}
    if len(masklet) > 1:
        logger.warning_once(
            "PixelRefer (full model) reads one frame per video object: objects with masks on several frames are "
            "read on their earliest frame (PixelRefer-Lite reads them all)."
        )
    return {"type": "region", "frame": min(masklet), "mask": masklet[min(masklet)]}


def _frame_index(key: str | int, num_frames: int, what: str) -> int:
    """A frame key (a string of digits in JSON; an int in a sample dict) as a frame index of the video."""
    digits = str(key) if isinstance(key, int) and not isinstance(key, bool) else key
    if not (isinstance(digits, str) and digits.isascii() and digits.isdigit()):
        raise _Invalid(f'{what}: frame key {key!r} is not a frame index; key each mask by its frame, e.g. "12"')
    if int(digits) >= num_frames:
        raise _Invalid(
            f"{what}: frame {int(digits)} is not in the video ({num_frames} frames); key the mask by a frame in "
            f"0..{num_frames - 1}"
        )
    return int(digits)


def _chat(turns: list[dict], media: _Media, regions: list[dict], strip_replies: bool) -> list[dict]:
    """Chat messages of the turns: media items at the tags of human turns, region items at their `<region>`s."""
    tag = VIDEO_PLACEHOLDER if media.kind == "video" else IMAGE_TOKEN
    values = _with_media_tags(turns, media, tag)
    found = sum(value.count(REGION_PLACEHOLDER) for value in values)
    if found != len(regions):
        raise _Invalid(
            f'the conversation has {found} {REGION_PLACEHOLDER} placeholder(s) but "masks" has {len(regions)} '
            f"object(s); give one mask entry per {REGION_PLACEHOLDER}, in order"
        )
    media_items = iter([{"type": media.kind, media.kind: str(path)} for path in media.paths])
    region_items = iter(regions)
    messages = []
    for turn, value in zip(turns, values):
        if turn["from"] != "human":
            content = _text_and_regions(value.strip() if strip_replies else value, region_items)
            messages.append({"role": "assistant", "content": content})
            continue
        chunks = value.split(tag)
        content = _text_and_regions(chunks[0].strip(), region_items)
        for chunk in chunks[1:]:
            content += [next(media_items), *_text_and_regions(chunk.strip(), region_items)]
        messages.append({"role": "user", "content": content})
    return messages


def _with_media_tags(turns: list[dict], media: _Media, tag: str) -> list[str]:
    """The turns' texts, with the media tags checked (one per image, one per video, in human turns only) and
    prepended to the first human turn when there are none."""
    values = [turn["value"] for turn in turns]
    for turn, value in zip(turns, values):
        for other in (IMAGE_TOKEN, VIDEO_PLACEHOLDER):
            if other in value and (other != tag or media.kind is None):
                raise _Invalid(f"a turn has a {other} tag but the sample has no {other[1:-1]}; remove the tag")
            if other in value and turn["from"] != "human":
                raise _Invalid(f'a reply has a {other} tag ({value!r:.60}); media tags go in "human" turns only')
    humans = [i for i, turn in enumerate(turns) if turn["from"] == "human"]
    found = sum(values[i].count(tag) for i in humans)
    if media.kind is not None and found == 0 and humans:
        values[humans[0]] = tag * len(media.paths) + values[humans[0]]
    elif found != len(media.paths):
        raise _Invalid(
            f"the human turns have {found} {tag} tag(s) for {len(media.paths)} {media.kind or 'media'} file(s); put "
            f"one {tag} per {media.kind or 'media file'} in the human turns, or none (then they are prepended)"
        )
    return values


def _text_and_regions(text: str, regions: Iterator[dict]) -> list[dict]:
    """Text and region items of `text`, each `<region>` taking the next region."""
    items = []
    for position, piece in enumerate(text.split(REGION_PLACEHOLDER)):
        if position:
            items.append(next(regions))
        if piece:
            items.append({"type": "text", "text": piece})
    return items


class PixelReferTrainingDataset(Dataset):
    """Training samples in the original release's format, each encoded by the processor with its labels.

    Args:
        data: training files (`.json`/`.jsonl`, see [`load_samples`]), sample dicts or [`TrainingSample`]s.
        processor ([`PixelReferProcessor`]): its `object_only` says whether the samples are read for Lite.
        media_root: folder the media paths of the samples are relative to (the original's `--data_folder`).
        skip_bad_samples: give `None` (and log one warning) for a bad sample instead of raising; the collator drops
            them. Bad samples are counted in `num_bad_samples` (per process: each DataLoader worker counts its own).
        allow_outside_media_root: accept absolute media paths and paths that leave `media_root` with `..`.
        processor_kwargs: keywords of the processor call (`truncation`, `max_length`, ...).

    Items are the processor's outputs for one sample (batch dimension 1: `input_ids` `(1, L)`, `attention_mask`,
    media and region inputs) plus `labels` `(1, L)`: the `input_ids` of the assistant turns (their text and closing
    `<|im_end|>`), -100 elsewhere.
    """

    def __init__(
        self,
        data: str | os.PathLike | Iterable,
        processor,
        media_root: str | os.PathLike,
        *,
        skip_bad_samples: bool = False,
        allow_outside_media_root: bool = False,
        processor_kwargs: dict | None = None,
    ):
        self.samples = _as_samples(data)
        self.processor = processor
        self.media_root = Path(media_root)
        self.skip_bad_samples = skip_bad_samples
        self.allow_outside_media_root = allow_outside_media_root
        self.processor_kwargs = dict(processor_kwargs or {})
        self.bad_samples: dict[int, BadSampleError] = {}

    @property
    def num_bad_samples(self) -> int:
        """Bad samples met so far (each counted once)."""
        return len(self.bad_samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | None:
        try:
            return self.encode(self.samples[index])
        except BadSampleError as error:
            if not self.skip_bad_samples:
                raise
            if index not in self.bad_samples:
                logger.warning("Skipping a bad training sample: %s", error)
                self.bad_samples[index] = error
            return None

    def messages(self, sample: TrainingSample) -> list[dict]:
        """The chat messages of one sample (see [`sample_to_messages`])."""
        return sample_to_messages(
            sample,
            self.media_root,
            object_only=self.processor.object_only,
            allow_outside_media_root=self.allow_outside_media_root,
        )

    def encode(self, sample: TrainingSample) -> dict[str, torch.Tensor]:
        """The processor's outputs for one sample, with `labels`; raises [`BadSampleError`] for a bad sample."""
        messages = self.messages(sample)
        try:
            inputs = self.processor.apply_chat_template(
                messages,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
                processor_kwargs=self.processor_kwargs,
            )
        except (OSError, TypeError, ValueError) as error:
            raise BadSampleError(f"the processor refused it: {error}", sample) from error
        features = dict(inputs)
        assistant_masks = features.pop("assistant_masks")
        features["labels"] = features["input_ids"].masked_fill(assistant_masks == 0, IGNORE_INDEX)
        return features


def _as_samples(data: str | os.PathLike | Iterable) -> list[TrainingSample]:
    if isinstance(data, (str, os.PathLike)):
        return load_samples(data)
    data = list(data)
    if all(isinstance(item, TrainingSample) for item in data):
        return data
    if all(isinstance(item, (str, os.PathLike)) for item in data):
        return load_samples(data)
    return [TrainingSample(item, IN_MEMORY, index) for index, item in enumerate(data)]


def check_data(
    data: str | os.PathLike | Iterable,
    processor,
    media_root: str | os.PathLike,
    *,
    allow_outside_media_root: bool = False,
    run_processor: bool = False,
    processor_kwargs: dict | None = None,
) -> list[BadSampleError]:
    """Every bad sample of `data` (files, sample dicts or [`TrainingSample`]s), in order.

    Runs the checks of [`sample_to_messages`] on every sample (media files and headers, conversations, tags, masks,
    frames; no model needed); with `run_processor`, also the processor itself with `processor_kwargs`, as training
    does (image and video decoding, crops, truncation), which is slower. Each error names the file, the sample index
    and the fix (`error.sample` has them as fields). Unreadable files raise a `ValueError` (see [`load_samples`]).
    """
    dataset = PixelReferTrainingDataset(
        data,
        processor,
        media_root,
        allow_outside_media_root=allow_outside_media_root,
        processor_kwargs=processor_kwargs,
    )
    check = dataset.encode if run_processor else dataset.messages
    errors = []
    for sample in dataset.samples:
        try:
            check(sample)
        except BadSampleError as error:
            errors.append(error)
    return errors


__all__ = [
    "BadSampleError",
    "IGNORE_INDEX",
    "PixelReferTrainingDataset",
    "TrainingSample",
    "check_data",
    "load_samples",
    "sample_to_messages",
]
