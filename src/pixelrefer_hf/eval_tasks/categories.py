"""LVIS and PACO region categories, shared by `lvis_region` and `paco_region`: one document per object of the
published images (as the original's `infer_paco_lvis.py`), scored by semantic IoU and semantic similarity
(`eval_paco_lvis.py`, see `pixelrefer_hf.eval_tasks.similarity`)."""

from .documents import RegionQuery, coco_image, coco_region, raw
from .scoring import mean_score, scored
from .similarity import mean_semantic_similarity, semantic_iou


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


def category_query(doc: dict) -> list[RegionQuery]:
    document = raw(doc)
    height, width = document["height"], document["width"]
    region = coco_region(document["segmentation"], height, width, doc["doc_id"])
    size = (height, width) if height and width else None
    return [
        RegionQuery(image=coco_image(document["file_name"]), regions=[region], doc_id=doc["doc_id"], image_size=size)
    ]


def category_results(doc: dict, results: list[str]) -> dict:
    prediction = results[0]
    item = {"doc_id": doc["doc_id"], "answer": doc["answer"], "prediction": prediction}
    results = scored(item, prediction, semantic_iou=semantic_iou(prediction, doc["answer"]))
    # The similarity is computed in the aggregation (one embedding batch); its item has no per-document score.
    return {**results, "semantic_similarity": None if results["semantic_iou"] is None else item}


def aggregate_semantic_iou(items):
    return mean_score(items)


def aggregate_semantic_similarity(items):
    return mean_semantic_similarity(items)
