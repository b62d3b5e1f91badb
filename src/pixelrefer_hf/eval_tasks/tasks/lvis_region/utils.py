"""LVIS region category (`lvis_val_1k_category.json` of Osprey's evaluation data, under
`PIXELREFER_EVAL_DATA/lvis/`; COCO images under `PIXELREFER_EVAL_DATA/coco/{train2017,val2017}/`).

One document per object, as the original's dataset (`infer_paco_lvis.py`); its prompt, and its semantic IoU and
semantic similarity (`eval_paco_lvis.py`, see `pixelrefer_hf.eval_tasks.similarity`). PixelRefer and Lite read the
same file with the same prompt.
Differs from the original: the image is looked up in `train2017/` then `val2017/` as Lite does (the PixelRefer script
opens the wrong path, see BENCHMARKS.md §1.0); a document whose mask or image cannot be read is counted in
`invalid_docs` instead of stopping the run; semantic similarity is NaN without a local embedding model.
"""

from pixelrefer_hf.eval_tasks.categories import category_rows
from pixelrefer_hf.eval_tasks.documents import documents_dataset, read_published


SOURCE = "https://huggingface.co/datasets/sunshine-lwt/Osprey-ValData"
FILE = "lvis/lvis_val_1k_category.json"
PROMPT = "What is the category of <region>? Using only one word or phrase."


def process_docs(dataset):
    """The published images (the stub the YAML loads is replaced), one row per object."""
    return documents_dataset(category_rows(read_published(FILE, SOURCE)))


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT
