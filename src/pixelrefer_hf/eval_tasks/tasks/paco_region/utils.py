"""PACO region part category (`paco_val_1k_category.json` of Osprey's evaluation data, under
`PIXELREFER_EVAL_DATA/paco/`; COCO images under `PIXELREFER_EVAL_DATA/coco/{train2017,val2017}/`).

As `lvis_region` (one document per object, semantic IoU and semantic similarity of `eval_paco_lvis.py`), with the
original's PACO prompt (chosen there by `'paco' in question_file`); masks are polygons or RLE. PixelRefer and Lite
read the same file with the same prompt.
Differs from the original: as `lvis_region` (image lookup as Lite's, unreadable documents in `invalid_docs`,
semantic similarity NaN without a local embedding model).
"""

from pixelrefer_hf.eval_tasks.categories import category_rows
from pixelrefer_hf.eval_tasks.documents import documents_dataset, read_published


SOURCE = "https://huggingface.co/datasets/sunshine-lwt/Osprey-ValData"
FILE = "paco/paco_val_1k_category.json"
PROMPT = (
    "What is the category of <region>? It maybe a subpart of an object. If it is a subpart, output in the format of "
    "'category:subcategory', else just output the category."
)


def process_docs(dataset):
    """The published images (the stub the YAML loads is replaced), one row per object."""
    return documents_dataset(category_rows(read_published(FILE, SOURCE)))


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT
