"""Visual Genome region phrases (`vg_val_5000.json` of CircleRadon/referring_evaluation, under
`PIXELREFER_EVAL_DATA/vg/`; images under `PIXELREFER_EVAL_DATA/vg/images/`, at each element's `image[0]`).

The original's prompt and region (`infer_vg.py`: a box mask from `boxes[0]` `[x, y, w, h]`; the `mask` field is
ignored) and its COCO caption metrics (`captioning/`, see `pixelrefer_hf.eval_tasks.captioning`). PixelRefer and Lite
read the same file with the same prompt.
Differs from the original: the box is cast to int (the original needs ints, it slices with them) and clipped to the
image as numpy slicing does, and a box with nothing left, a missing image or a size other than the document's is
counted in `invalid_docs` (the original would stop or crash on an empty mask); SPICE is not reported.
"""

from pixelrefer_hf.eval_tasks import captioning
from pixelrefer_hf.eval_tasks.documents import (
    RegionQuery,
    box_region,
    data_root,
    documents_dataset,
    raw,
    read_published,
)


SOURCE = "https://huggingface.co/datasets/CircleRadon/referring_evaluation (vg_val_5000.json; images: Visual Genome)"
FILE = "vg/vg_val_5000.json"
PROMPT = "Please describe <region> briefly."


def process_docs(dataset):
    """The published regions (the stub the YAML loads is replaced), one row per element."""
    elements = read_published(FILE, SOURCE)
    rows = [{"doc_id": str(i), "answer": e["caption"], "document": e} for i, e in enumerate(elements)]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


def doc_to_visual(doc):
    element = raw(doc)
    height, width = int(element["height"]), int(element["width"])
    region = box_region(element["boxes"][0], height, width, doc["doc_id"])
    image = data_root() / "vg" / "images" / element["image"][0]
    return [RegionQuery(image=str(image), regions=[region], doc_id=doc["doc_id"], image_size=(height, width))]


def process_results(doc, results):
    prediction = results[0]
    return captioning.caption_results(doc["doc_id"], doc["answer"], prediction)
