"""HC-STVG brief video region captions, under `PIXELREFER_EVAL_DATA/hc_stvg/` (videos under `videos/`): PixelRefer
reads `hc_stvg_val.json` (one RLE on `frame_idx` per element), Lite `hc-stvg-val-allframe.json` (training format:
`masks[0]` = `{frame: RLE}`, reference = `conversations[1].value`), with their own prompts (`infer_hc_stvg.py`).

Scored with the original's COCO caption metrics (`captioning/`, see `pixelrefer_hf.eval_tasks.captioning`).
Differs from the original: a document whose mask cannot be read, or lies on a frame the video does not have, is
counted in `invalid_docs`; SPICE is not reported.
"""

from pycocotools import mask as mask_utils

from pixelrefer_hf.eval_tasks import captioning
from pixelrefer_hf.eval_tasks.documents import (
    InvalidDocument,
    RegionQuery,
    data_root,
    documents_dataset,
    object_only,
    raw,
    read_published,
)


SOURCE = "https://huggingface.co/datasets/CircleRadon/referring_evaluation (videos: HC-STVG video_parts)"
FILES = {False: "hc_stvg/hc_stvg_val.json", True: "hc_stvg/hc-stvg-val-allframe.json"}
PROMPTS = {
    False: "Please describe the object <region> in brief in the video.",
    True: "There is one object in the video: <region>.\nPlease give a description of the highlighted object in the "
    "video. Using only one sentense.",
}


def _reference(element: dict) -> str:
    return element["conversations"][1]["value"] if object_only() else element["caption"]


def process_docs(dataset):
    """The published elements of the evaluated variant's file (the stub the YAML loads is replaced)."""
    elements = read_published(FILES[object_only()], SOURCE)
    rows = [{"doc_id": str(i), "answer": _reference(e), "document": e} for i, e in enumerate(elements)]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPTS[object_only()]


def _has_pixels(rle) -> bool:
    """Whether a mask has a foreground pixel (Lite drops empty ones); unreadable ones are left to the processor."""
    try:
        return bool(mask_utils.area(rle) > 0)
    except (TypeError, ValueError, KeyError):
        return True


def _region(element: dict, doc_id: str) -> dict:
    try:
        if not object_only():
            return {"frame": int(element["frame_idx"]), "rle": element["mask"]}
        masklet = {int(frame): {"rle": rle} for frame, rle in element["masks"][0].items() if _has_pixels(rle)}
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
        raise InvalidDocument(f"document {doc_id}: unreadable mask annotation ({error!r})") from error
    if not masklet:
        raise InvalidDocument(f"document {doc_id}: no non-empty mask")
    return {"masklet": masklet}


def doc_to_visual(doc):
    element = raw(doc)
    video = element["video"][0] if isinstance(element["video"], list) else element["video"]
    region = _region(element, doc["doc_id"])
    return [RegionQuery(video=str(data_root() / "hc_stvg" / "videos" / video), regions=[region], doc_id=doc["doc_id"])]


def process_results(doc, results):
    prediction = results[0]
    return captioning.caption_results(doc["doc_id"], doc["answer"], prediction)
