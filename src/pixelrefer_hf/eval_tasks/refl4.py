"""Ref-L4, shared by `refl4_region` and `refl4_region_detail`: the lines of `ref-l4-val.json` the original evaluates
and their regions (the box mask of `bbox` `[x, y, w, h]`, cast to int)."""

import json

from .documents import RegionQuery, box_region, data_root, published_file, raw


SOURCE = "https://huggingface.co/datasets/CircleRadon/referring_evaluation (Ref-L4 images: JierunChen/Ref-L4)"
FILE = "refl4/ref-l4-val.json"


def read_lines() -> list[dict]:
    """The lines of `ref-l4-val.json` (JSON Lines despite its name) the original evaluates."""
    text = published_file(FILE, SOURCE).read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [line for line in lines if "objects365" in line["file_name"]]


def refl4_query(doc: dict) -> list[RegionQuery]:
    line = raw(doc)
    height, width = int(line["height"]), int(line["width"])
    region = box_region(line["bbox"], height, width, doc["doc_id"])
    image = data_root() / "refl4" / "images" / line["file_name"]
    return [RegionQuery(image=str(image), regions=[region], doc_id=doc["doc_id"], image_size=(height, width))]
