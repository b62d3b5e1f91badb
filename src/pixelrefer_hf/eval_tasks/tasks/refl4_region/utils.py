"""Ref-L4 short region captions (`ref-l4-val.json`, JSON Lines, and `refl4_gt.json` of
CircleRadon/referring_evaluation, under `PIXELREFER_EVAL_DATA/refl4/`; images under `refl4/images/`).

As the original (`infer_refl4.py`, `refl4/gpt.py`, `captioning/`): only lines whose `file_name` contains
`objects365` are evaluated, the region is the box mask of `bbox` `[x, y, w, h]` (cast to int), the prompt is the
short one, and the COCO caption metrics are computed against the condensed references of `refl4_gt.json`, whose
image id `str(i)` is the i-th evaluated line. PixelRefer and Lite read the same file with the same prompt.
Differs from the original: predictions of more than 5 words are NOT condensed by GPT-4 first (`gpt.py`; no judge
here), so long answers score lower than the original's; the i-th line <-> id `str(i)` pairing is made explicit (the
original's depends on the glob order of its chunk files); a box outside the image, a missing image or a size other
than the document's is counted in `invalid_docs`; SPICE is not reported.
"""

from pixelrefer_hf.eval_tasks import captioning
from pixelrefer_hf.eval_tasks.documents import (
    documents_dataset,
    read_published,
)
from pixelrefer_hf.eval_tasks.refl4 import FILE, SOURCE, read_lines, refl4_query


GT_FILE = "refl4/refl4_gt.json"
PROMPT = "Please describe <region> in brief."


def references(ground_truth: dict) -> dict[str, list[str]]:
    """The condensed reference captions of `refl4_gt.json` per image id."""
    captions = {str(image["id"]): [] for image in ground_truth["images"]}
    for annotation in ground_truth["annotations"]:
        captions.setdefault(str(annotation["image_id"]), []).append(annotation["caption"])
    return captions


def process_docs(dataset):
    """The evaluated lines (the stub the YAML loads is replaced), one row each, with their references."""
    lines, captions = read_lines(), references(read_published(GT_FILE, SOURCE))
    if len(captions) != len(lines):
        raise ValueError(f"{GT_FILE} has {len(captions)} images but {FILE} has {len(lines)} objects365 lines")
    rows = [
        {"doc_id": str(i), "answer": line["caption"], "references": captions[str(i)], "document": line}
        for i, line in enumerate(lines)
    ]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


doc_to_visual = refl4_query


def process_results(doc, results):
    prediction = results[0]
    return captioning.caption_results(doc["doc_id"], doc["references"], prediction)
