"""Annotation files -> one [`RegionAnnotation`] per object to caption.

Three published formats are read, and told apart by their content (or named with `format=`):

- `"coco"`: COCO instances, `{"images": [{"id", "file_name", "height", "width"}, ...], "annotations": [{"id",
  "image_id", "segmentation", "bbox"}, ...]}`. An annotation's region is its `segmentation` (polygons, compressed or
  uncompressed RLE), or its `bbox` (`[x, y, w, h]`) when it has none. Its id is the annotation's `id`.
- `"training"`: the original release's training data (`.json` list or `.jsonl`; see
  `pixelrefer_hf.training.dataset`): every object of a sample's `masks` on its `image` (the first, where it has
  several: the masks are on it) or `video`. Its id is `"<sample index>:<object index>"`. A sample is read, and checked,
  as training reads it (`sample_to_messages`), when its objects are captioned.
- `"videorefer"`: VideoRefer-style video annotations, a list of `{"id", "video", "frame_idx", "annotation":
  [{"<frame>": {"segmentation": RLE}, ...}, ...]}` (VideoRefer-Bench-D/Q): every object of `annotation`, read as the
  evaluation reads it (the full model on `frame_idx`, Lite on every annotated frame). Its id is
  `"<element id>:<object index>"`.

Media paths are relative to the media root and must stay inside it (see [`media_file`]). An annotation that cannot
be read gets its reason (`error`, or a [`BadAnnotation`] from `load()`) instead of failing the whole file; a file that
cannot be read at all, or whose ids repeat (captions are written and resumed by id), raises a `ValueError`.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..eval_tasks.documents import InvalidDocument, box_region, coco_region
from ..media_paths import resolve_media_path


if TYPE_CHECKING:
    from ..training.dataset import TrainingSample


FORMATS = ("coco", "training", "videorefer")


class BadAnnotation(ValueError):
    """An annotation that cannot be captioned; the message says why and what to fix."""


@dataclass(frozen=True)
class RegionAnnotation:
    """One object to caption.

    id: its id in the output (COCO's `id`; `"<sample>:<object>"` or `"<element>:<object>"` for the other formats).
    kind: `"image"` or `"video"`.
    media: the image or video path as the file gives it (relative to the media root); None when it names none.
    order: its position in the file (the order of the output).
    load: returns its region in a processor form; raises a [`BadAnnotation`] naming what is wrong.
    image_size: the `(height, width)` the file states for its image, checked against the image.
    error: why it cannot be captioned, when that is known from the file alone.
    """

    id: int | str
    kind: str
    media: str | None
    order: int
    load: Callable[[], dict] = field(repr=False, compare=False)
    image_size: tuple[int, int] | None = None
    error: str | None = None

    @property
    def key(self) -> str:
        """The id as JSON text (COCO's `7` and a string `"7"` are different ids)."""
        return json.dumps(self.id)


@dataclass
class AnnotationFile:
    """The objects of an annotation file, in file order; `coco` is the parsed COCO file (for its captioned copy)."""

    path: Path
    format: str
    records: list[RegionAnnotation]
    coco: dict | None = None


def read_annotations(
    path: str | os.PathLike,
    media_root: str | os.PathLike,
    *,
    object_only: bool,
    format: str = "auto",
    allow_outside_media_root: bool = False,
) -> AnnotationFile:
    """Reads an annotation file in one of `FORMATS` (`"auto"`: told from its content).

    Args:
        path: the `.json` (or, for the training format, `.jsonl`) file.
        media_root: the folder its media paths are relative to.
        object_only: whether PixelRefer-Lite captions it (video objects are read on every annotated frame).
        allow_outside_media_root: accept absolute media paths and paths that leave the media root with `..`.
    """
    path, media_root = Path(path), Path(media_root)
    if format not in ("auto", *FORMATS):
        raise ValueError(f"format {format!r} is not one of auto, {', '.join(FORMATS)}")
    if path.suffix == ".jsonl":
        data = None
        format = "training" if format == "auto" else format
    else:
        data = _read_json(path)
        format = detect_format(path, data) if format == "auto" else format
    if format == "coco":
        records = _coco_records(path, data)
    elif format == "training":
        records = _training_records(path, data, media_root, object_only, allow_outside_media_root)
    else:
        records = _videorefer_records(path, data, object_only)
    _check_unique(path, records)
    return AnnotationFile(path, format, records, data if format == "coco" else None)


def detect_format(path: Path, data: Any) -> str:
    """Which of `FORMATS` parsed JSON content is in, or a `ValueError` saying what each looks like."""
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        return "coco"
    if isinstance(data, list) and data and all(isinstance(element, dict) for element in data):
        if all("conversations" in element for element in data):
            return "training"
        if all("annotation" in element and "video" in element for element in data):
            return "videorefer"
    raise ValueError(
        f"{path}: cannot tell the annotation format; pass a COCO instances file ({{'images': [...], 'annotations': "
        "[...]}}), the original training format (a list of samples with 'conversations' and 'masks', or .jsonl) or "
        "VideoRefer-style annotations (a list of {'video', 'frame_idx', 'annotation'}), or name it with --format"
    )


def media_file(root: Path, name: str | None, allow_outside: bool = False) -> Path:
    """`root / name`, checked to exist and (unless `allow_outside`) to stay inside `root` (see
    [`~pixelrefer_hf.media_paths.resolve_media_path`]), else a `BadAnnotation`."""
    if name is None:
        raise BadAnnotation(f"the annotation names no image or video; give its path relative to {root}")
    try:
        path = resolve_media_path(name, root, allow_outside=allow_outside, allow_with="--allow-outside-media-root")
    except (TypeError, ValueError) as error:
        raise BadAnnotation(str(error)) from None
    if not path.exists():
        raise BadAnnotation(f"media file {str(path)!r} does not exist; check the media root ({root}) and the path")
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the annotation file ({error}); check the path") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}, column {error.colno} ({error.msg})") from None


def _check_unique(path: Path, records: list[RegionAnnotation]) -> None:
    seen: dict[str, int] = {}
    for record in records:
        if record.key in seen:
            raise ValueError(
                f"{path}: annotation id {record.id!r} is used twice (annotations {seen[record.key]} and "
                f"{record.order}); give every annotation its own id (captions are written and resumed by id)"
            )
        seen[record.key] = record.order


# COCO.


def _coco_records(path: Path, data: dict) -> list[RegionAnnotation]:
    images, annotations = data["images"], data["annotations"]
    if not isinstance(images, list) or not isinstance(annotations, list):
        raise ValueError(f"{path}: 'images' and 'annotations' of a COCO file are lists of objects")
    by_id = {image.get("id"): image for image in images if isinstance(image, dict)}
    return [_coco_record(path, order, annotation, by_id) for order, annotation in enumerate(annotations)]


def _coco_record(path: Path, order: int, annotation: Any, images: dict) -> RegionAnnotation:
    if not isinstance(annotation, dict) or not isinstance(annotation.get("id"), (int, str)):
        raise ValueError(
            f"{path}: annotation {order} has no 'id' (an integer or a string); COCO annotations need unique ids, "
            "by which the captions are written and resumed"
        )
    image = images.get(annotation.get("image_id"))
    record = partial(RegionAnnotation, annotation["id"], "image", order=order)
    if image is None:
        return record(None, load=_unreadable, error=f"image_id {annotation.get('image_id')!r} is not in 'images'")
    size = (image.get("height"), image.get("width"))
    if not all(isinstance(side, int) and side > 0 for side in size):
        error = f"image {image.get('id')!r} has no positive integer 'height' and 'width' (got {size})"
        return record(image.get("file_name"), load=_unreadable, error=error)
    return record(image.get("file_name"), load=partial(_coco_region, annotation, size), image_size=size)


def _coco_region(annotation: dict, size: tuple[int, int]) -> dict:
    """An annotation's `segmentation`, or its `bbox` without one, as a processor region."""
    prefix = f"document {annotation['id']}: "
    try:
        if annotation.get("segmentation"):
            return coco_region(annotation["segmentation"], *size, annotation["id"])
        if annotation.get("bbox") is not None:
            return box_region(annotation["bbox"], *size, annotation["id"])
    except InvalidDocument as error:
        raise BadAnnotation(str(error).removeprefix(prefix)) from None
    raise BadAnnotation("it has neither a 'segmentation' nor a 'bbox'; give one of them")


def _unreadable() -> dict:
    raise BadAnnotation("unreadable annotation")


# The original training format.


def _training_records(
    path: Path, data: Any, media_root: Path, object_only: bool, allow_outside: bool
) -> list[RegionAnnotation]:
    """The objects of a training file (`data`: its parsed `.json` content; None for a `.jsonl` file)."""
    # Here, not above: `pixelrefer_hf.training` imports the Trainer, which the other formats do not need.
    from ..training.dataset import TrainingSample, load_samples, sample_to_messages

    if data is None:
        samples = load_samples(path)
    elif isinstance(data, list):
        samples = [TrainingSample(sample, str(path), index) for index, sample in enumerate(data)]
    else:
        raise ValueError(f"{path}: a .json training file holds a list of samples, got a {type(data).__name__}")
    read = partial(
        sample_to_messages, media_root=media_root, object_only=object_only, allow_outside_media_root=allow_outside
    )
    objects = _TrainingObjects(read)
    records = []
    for sample in samples:
        data = sample.data if isinstance(sample.data, dict) else {}
        kind = "video" if "video" in data else "image"
        media = data.get(kind)
        media = media[0] if isinstance(media, list) and media else media
        for index in range(_object_count(sample.data)):
            records.append(
                RegionAnnotation(
                    f"{sample.index}:{index}",
                    kind,
                    media if isinstance(media, str) else None,
                    len(records),
                    load=partial(objects.region, sample, index),
                )
            )
    return records


def _object_count(data: Any) -> int:
    """One object per entry of a sample's `masks` (none without masks); a sample that is not a JSON object, or whose
    `masks` is not a list, counts as one object, so that it is reported as bad."""
    if not isinstance(data, dict):
        return 1
    masks = data.get("masks")
    if masks is None:
        return 0
    return len(masks) if isinstance(masks, list) else 1


class _TrainingObjects:
    """The region items of training samples, each sample read once (its objects are captioned one after the other)."""

    def __init__(self, read: Callable[["TrainingSample"], list[dict]]):
        self.read = read  # `sample_to_messages`, which raises a `BadSampleError` (a `ValueError`)
        self._last: tuple[TrainingSample | None, list[dict] | ValueError] = (None, [])

    def region(self, sample: "TrainingSample", index: int) -> dict:
        if self._last[0] is not sample:
            try:
                messages = self.read(sample)
                regions = [item for message in messages for item in message["content"] if item["type"] == "region"]
            except ValueError as error:
                regions = error
            self._last = (sample, regions)
        regions = self._last[1]
        if isinstance(regions, ValueError):
            raise BadAnnotation(str(regions).removeprefix(f"{sample.where}: "))
        return {key: value for key, value in regions[index].items() if key not in ("type", "image_index")}


# VideoRefer.


def _videorefer_records(path: Path, data: Any, object_only: bool) -> list[RegionAnnotation]:
    if not isinstance(data, list):
        raise ValueError(f"{path}: VideoRefer annotations are a list of elements, got a {type(data).__name__}")
    records = []
    for position, element in enumerate(data):
        element = element if isinstance(element, dict) else {}
        objects = element.get("annotation")
        element_id = element.get("id", position)
        media = element.get("video") if isinstance(element.get("video"), str) else None
        for index in range(len(objects) if isinstance(objects, list) else 1):
            load = partial(_videorefer_region, element, index, object_only)
            records.append(RegionAnnotation(f"{element_id}:{index}", "video", media, len(records), load=load))
    return records


def _videorefer_region(element: dict, index: int, object_only: bool) -> dict:
    """Object `index` of a VideoRefer element as the evaluation reads it (`eval_tasks.documents.videorefer_query`):
    a masklet of its frames' RLEs for Lite, its mask on `frame_idx` for the full model."""
    objects, frame_idx = element.get("annotation"), element.get("frame_idx")
    if not isinstance(objects, list) or not str(frame_idx).isdigit():
        raise BadAnnotation(
            "a VideoRefer element needs 'video', 'frame_idx' (a frame index) and 'annotation' (a list)"
        )
    frames = objects[index]
    if not isinstance(frames, dict) or not all(str(frame).isdigit() for frame in frames):
        raise BadAnnotation(f'an object is {{"<frame index>": {{"segmentation": RLE}}, ...}}, got {frames!r:.80}')
    masklet = {
        int(frame): {"rle": entry["segmentation"]}
        for frame, entry in frames.items()
        if isinstance(entry, dict) and entry.get("segmentation") is not None
    }
    if not masklet:
        raise BadAnnotation("the object has no mask (no frame with a 'segmentation')")
    if object_only:
        return {"masklet": masklet}
    if int(frame_idx) not in masklet:
        raise BadAnnotation(
            f"the object has no mask on frame_idx {frame_idx} (its frames: {sorted(masklet)}), the frame the full "
            "model reads it on"
        )
    return {"frame": int(frame_idx), **masklet[int(frame_idx)]}


__all__ = ["FORMATS", "AnnotationFile", "BadAnnotation", "RegionAnnotation", "detect_format", "read_annotations"]
