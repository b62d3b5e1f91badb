"""What the region tasks hand the `pixelrefer` lmms-eval model, and how they read the benchmarks' published files.

A task's `doc_to_visual(doc)` returns `[RegionQuery(...)]`: the image or video of the document and its regions in
the order of the `<region>` placeholders of `doc_to_text(doc)`, in the processor's region forms (`{"rle": ...}`,
`{"polygon": ...}`, `{"box": ...}`, `{"mask": ...}`; on a video with `"frame"` or as a `"masklet"`). A document that
cannot be read (missing media, a mask of another size than its image, a bad RLE, a frame not in the video, a
`<region>` count other than its objects) raises `InvalidDocument` there or in the processor; the model then answers
`INVALID_PREDICTION` for it and logs why, and the task counts it in `invalid_docs` instead of scoring it. A media path
outside `PIXELREFER_EVAL_DATA` (absolute, or leaving it with `..`), an unreadable image or one of more than
`validation.MAX_IMAGE_PIXELS` pixels, and more than `validation.MAX_REGIONS_PER_SAMPLE` regions make a document invalid
too (set `PIXELREFER_EVAL_ALLOW_OUTSIDE_DATA=1` to allow media outside the data folder).

Published files are read as they are (`read_published`), from the folder `PIXELREFER_EVAL_DATA` names; each document
becomes one row whose raw element is kept as JSON text (`"document"`), since `datasets` cannot hold the benchmarks'
frame-keyed or mixed RLE/polygon annotations as columns.
"""

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..media_paths import resolve_media_path
from ..processing import validation


DATA_ENV = "PIXELREFER_EVAL_DATA"
# Set to 1 to let documents name media outside PIXELREFER_EVAL_DATA (absolute paths, or `..` out of it).
ALLOW_OUTSIDE_ENV = "PIXELREFER_EVAL_ALLOW_OUTSIDE_DATA"
INVALID_PREDICTION = "[pixelrefer: invalid document]"
# The variant being evaluated, set by the `pixelrefer` model when lmms-eval builds it (before the tasks): some
# benchmarks give Lite other files ("-allframe") and other prompts, as the original does.
_EVALUATED = {"object_only": False}


def set_object_only(object_only: bool) -> None:
    _EVALUATED["object_only"] = bool(object_only)


def object_only() -> bool:
    """Whether PixelRefer-Lite is being evaluated (its files and prompts where the benchmark has them)."""
    return _EVALUATED["object_only"]


class InvalidDocument(ValueError):
    """A benchmark document the model cannot be asked about (the message says which and why)."""


@dataclass
class RegionQuery:
    """The media and regions of one benchmark document.

    image: path of the image; video: path of the video file or frame folder (exactly one of them).
    regions: one region per `<region>` of the prompt, in order, in the processor's forms.
    doc_id: the document's id, for messages.
    image_size: the `(height, width)` the document states for its image, checked against the image itself.
    """

    image: str | None = None
    video: str | None = None
    regions: list[dict] = field(default_factory=list)
    doc_id: Any = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self):
        where = f"document {self.doc_id}"
        if (self.image is None) == (self.video is None):
            raise InvalidDocument(f"{where}: give exactly one of image and video")
        path = Path(self.image or self.video)
        try:
            _check_under_data_root(path)
        except ValueError as error:
            raise InvalidDocument(f"{where}: {error}") from None
        if not path.exists():
            raise InvalidDocument(f"{where}: media file {path} does not exist")
        try:
            validation.region_count(len(self.regions), where)
            if self.image is not None:
                validation.image_file_size(path, where)  # readable, and within MAX_IMAGE_PIXELS
        except ValueError as error:
            raise InvalidDocument(str(error)) from None


def _check_under_data_root(path: Path) -> None:
    """Refuses a media path outside `PIXELREFER_EVAL_DATA` (when it is set) unless `PIXELREFER_EVAL_ALLOW_OUTSIDE_DATA`
    is 1: a published file must not point anywhere on disk."""
    root = os.environ.get(DATA_ENV)
    if root:
        allowed = os.environ.get(ALLOW_OUTSIDE_ENV) == "1"
        resolve_media_path(os.path.abspath(path), root, allow_outside=allowed, allow_with=f"{ALLOW_OUTSIDE_ENV}=1")


def data_root() -> Path:
    """The folder of the benchmarks' published files (`PIXELREFER_EVAL_DATA`)."""
    root = os.environ.get(DATA_ENV)
    if not root:
        raise FileNotFoundError(
            f"Set {DATA_ENV} to the folder holding the benchmarks' published files (see the README's Evaluation "
            "section for its layout)."
        )
    return Path(root)


def published_file(relative: str, source: str) -> Path:
    """`PIXELREFER_EVAL_DATA/relative`, or a `FileNotFoundError` naming it and where to get it (`source`)."""
    path = data_root() / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; download it from {source} into {data_root()}/{relative}")
    return path


def read_published(relative: str, source: str) -> Any:
    """The JSON (or JSON Lines) content of a published file."""
    path = published_file(relative, source)
    text = path.read_text()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def documents_dataset(rows: list[dict]):
    """`datasets.Dataset` of rows whose `"document"` is the raw element as JSON text (other fields flat)."""
    from datasets import Dataset

    return Dataset.from_list([{**row, "document": json.dumps(row["document"])} for row in rows])


def raw(doc: dict) -> Any:
    """The raw published element of a row made by `documents_dataset`."""
    return json.loads(doc["document"])


def coco_region(annotation: Any, height: int | None, width: int | None, doc_id: Any) -> dict:
    """A COCO mask annotation as the original's `annToMask` reads it -> a processor region form.

    Polygons (a list of `[x, y, ...]` parts) and uncompressed RLE need the document's `height`/`width`; compressed RLE
    carries its size.
    """
    if isinstance(annotation, list):
        if height is None or width is None:
            raise InvalidDocument(f"document {doc_id}: a polygon needs the document's height and width")
        return {"polygon": annotation}
    if isinstance(annotation, dict) and "counts" in annotation:
        if isinstance(annotation["counts"], list) and (height is None or width is None):
            raise InvalidDocument(f"document {doc_id}: an uncompressed RLE needs the document's height and width")
        return {"rle": annotation}
    raise InvalidDocument(f"document {doc_id}: mask annotation {str(annotation)[:60]!r} is neither RLE nor polygon")


def box_region(box: list, height: int, width: int, doc_id: str) -> dict:
    """A `[x, y, w, h]` box as the original's `mask[y:y+h, x:x+w] = 1` draws it -> `{"box": [x0, y0, x1, y1]}`."""
    numbers_only = isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(value) for value in box)
    if not numbers_only:
        raise InvalidDocument(f"document {doc_id}: box {box!r:.60} is not [x, y, w, h] (4 finite numbers)")
    x, y, w, h = (int(value) for value in box)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        raise InvalidDocument(f"document {doc_id}: box {box} covers no pixel of the {height}x{width} image")
    return {"box": [x0, y0, x1, y1]}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def coco_image(file_name: str) -> str:
    """`coco/train2017/<name>` if it exists, else `coco/val2017/<name>` (the original's lookup)."""
    train = data_root() / "coco" / "train2017" / file_name
    return str(train if train.exists() else data_root() / "coco" / "val2017" / file_name)


def videorefer_query(element: dict, videos: Path, doc_id: Any) -> list[RegionQuery]:
    """A VideoRefer-Bench (-Q or -D) element -> its video and one masklet `{frame: RLE}` per object of its
    `annotation` (the full model reads the object on `frame_idx`, Lite on every annotated frame)."""
    try:
        key_frame, annotation, video = int(element["frame_idx"]), element["annotation"], str(element["video"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidDocument(f"document {doc_id}: unreadable element ({type(error).__name__}: {error})") from error
    if not isinstance(annotation, list):
        raise InvalidDocument(f"document {doc_id}: annotation is not a list of objects")
    regions = [_videorefer_region(obj, key_frame, doc_id, i) for i, obj in enumerate(annotation)]
    return [RegionQuery(video=str(videos / video), regions=regions, doc_id=doc_id)]


def _videorefer_region(annotation: dict, key_frame: int, doc_id: Any, index: int) -> dict:
    try:
        masklet = {int(frame): {"rle": entry["segmentation"]} for frame, entry in annotation.items() if entry}
    except (TypeError, ValueError, KeyError, AttributeError) as error:
        raise InvalidDocument(f"document {doc_id}, object {index}: unreadable annotation ({error})") from error
    masklet = {frame: form for frame, form in masklet.items() if form["rle"] is not None}
    if not masklet:
        raise InvalidDocument(f"document {doc_id}, object {index}: no mask")
    if object_only():
        return {"masklet": masklet}
    if key_frame not in masklet:
        raise InvalidDocument(f"document {doc_id}, object {index}: no mask on frame_idx {key_frame}")
    return {"frame": key_frame, **masklet[key_frame]}


def is_invalid(prediction: str) -> bool:
    return prediction == INVALID_PREDICTION


__all__ = [
    "ALLOW_OUTSIDE_ENV",
    "DATA_ENV",
    "INVALID_PREDICTION",
    "InvalidDocument",
    "RegionQuery",
    "box_region",
    "coco_image",
    "coco_region",
    "data_root",
    "documents_dataset",
    "is_invalid",
    "object_only",
    "published_file",
    "raw",
    "read_published",
    "set_object_only",
    "videorefer_query",
]
