"""PACO region part category (`paco_val_1k_category.json` of Osprey's evaluation data, under
`PIXELREFER_EVAL_DATA/paco/`; COCO images under `PIXELREFER_EVAL_DATA/coco/{train2017,val2017}/`).

As `lvis_region` (one document per object, semantic IoU and semantic similarity of `eval_paco_lvis.py`), with the
original's PACO prompt (chosen there by `'paco' in question_file`); masks are polygons or RLE. PixelRefer and Lite
read the same file with the same prompt.
Differs from the original: as `lvis_region` (image lookup as Lite's, unreadable documents in `invalid_docs`,
semantic similarity NaN without a local embedding model).
"""

from pixelrefer_hf.eval_tasks.documents import (
    RegionQuery,
    coco_region,
    data_root,
    documents_dataset,
    raw,
    read_published,
)
from pixelrefer_hf.eval_tasks.scoring import count_invalid, mean_score, scored
from pixelrefer_hf.eval_tasks.similarity import mean_semantic_similarity, semantic_iou


SOURCE = "https://huggingface.co/datasets/sunshine-lwt/Osprey-ValData"
FILE = "paco/paco_val_1k_category.json"
PROMPT = (
    "What is the category of <region>? It maybe a subpart of an object. If it is a subpart, output in the format of "
    "'category:subcategory', else just output the category."
)


def category_rows(elements: list[dict]) -> list[dict]:
    """One row per object of the published images (`categories[i]` names `annotations[i]`)."""
    rows = []
    for i, element in enumerate(elements):
        region_nums = element.get("region_num") or []
        for j, (category, annotation) in enumerate(zip(element["categories"], element["annotations"])):
            document = {
                "file_name": element["file_name"],
                "height": element.get("height"),
                "width": element.get("width"),
                "segmentation": annotation.get("segmentation"),
                "region_num": region_nums[j] if j < len(region_nums) else 0,
            }
            rows.append({"doc_id": f"{i}_{j}", "answer": category, "document": document})
    return rows


def coco_image(file_name: str) -> str:
    """`coco/train2017/<name>` if it exists, else `coco/val2017/<name>` (the original's lookup)."""
    train = data_root() / "coco" / "train2017" / file_name
    return str(train if train.exists() else data_root() / "coco" / "val2017" / file_name)


def process_docs(dataset):
    """The published images (the stub the YAML loads is replaced), one row per object."""
    return documents_dataset(category_rows(read_published(FILE, SOURCE)))


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


def doc_to_visual(doc):
    document = raw(doc)
    height, width = document["height"], document["width"]
    region = coco_region(document["segmentation"], height, width, doc["doc_id"])
    size = (height, width) if height and width else None
    return [
        RegionQuery(image=coco_image(document["file_name"]), regions=[region], doc_id=doc["doc_id"], image_size=size)
    ]


def process_results(doc, results):
    prediction = results[0]
    item = {"doc_id": doc["doc_id"], "answer": doc["answer"], "prediction": prediction}
    results = scored(item, prediction, semantic_iou=semantic_iou(prediction, doc["answer"]))
    # The similarity is computed in the aggregation (one embedding batch); its item has no per-document score.
    return {**results, "semantic_similarity": None if results["semantic_iou"] is None else item}


def aggregate_semantic_iou(items):
    return mean_score(items)


def aggregate_semantic_similarity(items):
    return mean_semantic_similarity(items)


def aggregate_invalid(counts):
    return count_invalid(counts)
