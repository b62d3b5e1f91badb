"""Ferret-Bench referring reasoning (judged by an LLM against GPT-4 reference answers): Osprey's
`box_refer_reason.json` (the questions, the box as a 4-corner polygon) with COCO images under
`PIXELREFER_EVAL_DATA/coco/{train2017,val2017}/`; for the judge, ml-ferret's `rule.json` and
`refer_reason/{question,context,answer}.jsonl` under `PIXELREFER_EVAL_DATA/ferret/`.

The prompts are the original's (`infer_ferret.py`: the raw `text`; Lite: `"There is 1 region in the image: <region> "`
+ the text without `<region>`). The judge request is `2.eval_ferret.py`'s (system message, `[Context]\\...` content
with the question of `question.jsonl`, the model as Assistant 1 and the reference answer, its ` [..]` boxes removed,
as Assistant 2, the `refer_reason` rule). `relative_score` = mean(model scores) / mean(reference scores) x 100, as
`3.summarize.py` reports it.

Differs from the original, where it is broken:
* the polygon is decoded with the image's own size, looked up in `train2017/` then `val2017/` (the original opens
  `image_folder/file_name` without the split folder, and never sets the path otherwise);
* a question's judge inputs are matched by `question_id` (the original zips the files by line order);
* `parse_score` splits on any whitespace after turning commas into spaces, so `"8, 9"` and `"8 9"` both parse (the
  original splits on single spaces: `"8, 9"` gives 3 tokens and fails), and a reply whose first line is not exactly
  two numbers is a failed parse: it is DROPPED from both means (the original averages its `[-1, -1]` in) and
  counted in `judge_failures`;
* the judge is the configured one (the original hard-codes `gpt-4-0409`), and an unreadable document is counted in
  `invalid_docs`.
"""

import re

from PIL import Image

from pixelrefer_hf.eval_tasks.documents import (
    InvalidDocument,
    RegionQuery,
    coco_region,
    data_root,
    documents_dataset,
    is_invalid,
    object_only,
    raw,
    read_published,
)
from pixelrefer_hf.eval_tasks.judge import active_judge, judged
from pixelrefer_hf.eval_tasks.scoring import valid


SOURCE = "https://github.com/CircleRadon/Osprey (osprey/eval/ferret-bench/box_refer_reason.json)"
JUDGE_SOURCE = "https://github.com/apple/ml-ferret (ferret/eval/ferret_gpt4_data)"
SYSTEM = "You are a helpful and precise assistant for checking the quality of the answer."
CATEGORY = "refer_reason"


def _by_question(rows: list[dict]) -> dict:
    return {row["question_id"]: row for row in rows}


def process_docs(dataset):
    """One row per question of `box_refer_reason.json`, with its judge question, context and reference answer."""
    elements = read_published("ferret/box_refer_reason.json", SOURCE)
    questions = _by_question(read_published(f"ferret/{CATEGORY}/question.jsonl", JUDGE_SOURCE))
    answers = _by_question(read_published(f"ferret/{CATEGORY}/answer.jsonl", JUDGE_SOURCE))
    contexts = {row["image"]: row["text"] for row in read_published(f"ferret/{CATEGORY}/context.jsonl", JUDGE_SOURCE)}
    rows = []
    for element in elements:
        qid = element["question_id"]
        question = questions.get(qid, {})
        rows.append(
            {
                "doc_id": str(qid),
                "category": element.get("category", ""),
                "judge_question": question.get("text", ""),
                "context": contexts.get(question.get("image", element["image"]), ""),
                "reference": strip_boxes(answers.get(qid, {}).get("text", "")),
                "document": element,
            }
        )
    return documents_dataset(rows)


def strip_boxes(answer: str) -> str:
    """The reference answer without its ` [x1, y1, x2, y2]` boxes (`postprocess_answer`)."""
    for match in re.findall(r"\[.*?\]", answer):
        answer = answer.replace(" " + match, "")
    return answer


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    element = raw(doc)
    if object_only() and element.get("category") == "reason":
        return "There is 1 region in the image: <region> " + element["text"].replace("<region>", "")
    return element["text"]


def image_path(name: str, doc_id: str):
    """The COCO image, in `train2017/` or else `val2017/`."""
    for split in ("train2017", "val2017"):
        path = data_root() / "coco" / split / name
        if path.is_file():
            return path
    coco = data_root() / "coco"
    raise InvalidDocument(f"document {doc_id}: image {name} is in neither {coco}/train2017 nor {coco}/val2017")


def doc_to_visual(doc):
    element = raw(doc)
    path = image_path(element["image"], doc["doc_id"])
    with Image.open(path) as image:  # the original decodes the polygon with the image's own size
        width, height = image.size
    region = coco_region(element["annotation"]["segmentation"], height, width, doc["doc_id"])
    return [RegionQuery(image=str(path), regions=[region], doc_id=doc["doc_id"])]


def judge_content(doc: dict, prediction: str, rule: dict) -> str:
    """The user message of `2.eval_ferret.py` (its `\\{` renders a backslash and no newline after `[Context]`)."""
    role = rule["role"]
    return (
        f"[Context]\\{doc['context']}\n\n"
        f"[Question]\n{doc['judge_question']}\n\n"
        f"[{role} 1]\n{prediction}\n\n[End of {role} 1]\n\n"
        f"[{role} 2]\n{doc['reference']}\n\n[End of {role} 2]\n\n"
        f"[System]\n{rule['prompt']}\n\n"
    )


def parse_score(review: str) -> tuple[float, float] | None:
    """The two scores on the first line of a review (`"8 9"`, `"8, 9"`, `"8.5\t9"`), or `None` if it is not exactly
    two numbers."""
    tokens = review.strip().split("\n")[0].replace(",", " ").split()
    if len(tokens) != 2:
        return None
    try:
        return float(tokens[0]), float(tokens[1])
    except ValueError:
        return None


def process_results(doc, results):
    """Judges the answer against the reference answer (unless the document is invalid or no judge is configured)."""
    prediction = results[0]
    result = {"doc_id": doc["doc_id"], "category": doc["category"]}
    judge = active_judge()
    if judge is None or is_invalid(prediction):
        return judged(result, prediction, **(dict.fromkeys(("relative_score", "judge_failures")) if judge else {}))
    rule = read_published("ferret/rule.json", JUDGE_SOURCE)[CATEGORY]
    review = judge.chat(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": judge_content(doc, prediction, rule)}]
    )
    scores = parse_score(review)
    result = {**result, "review": review, "model": None, "reference": None}
    if scores is not None:
        result.update(model=scores[0], reference=scores[1])
    return judged(result, prediction, relative_score=scores[0] if scores else None, judge_failures=float(not scores))


def aggregate_relative_score(items):
    """mean(model) / mean(reference) x 100 over the parsed reviews (NaN if none)."""
    pairs = [(item["model"], item["reference"]) for item in valid(items)]
    reference = sum(ref for _, ref in pairs)
    return sum(model for model, _ in pairs) / reference * 100 if pairs and reference else float("nan")


def aggregate_judge_failures(items):
    """How many reviews could not be parsed (they are left out of `relative_score`)."""
    return int(sum(item["score"] for item in valid(items)))
