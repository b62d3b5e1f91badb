"""DLC-Bench (detailed localized captions, judged by an LLM): `annotations.json` (COCO instances, compressed RLE
masks), `qa.json`, `class_names.json` and `images/`, under `PIXELREFER_EVAL_DATA/dlc_bench/`.

One document per annotation, in the original's order (images in file order, each image's annotations in file
order, `infer_dam.py`); the prompt is the original's (full and Lite alike). The judge protocol is DAM's
`dam/eval.py`: a recognition question ("Is it likely that the object in the description is ...") and then every
`qa.json` question of the annotation, each asked separately with `prompt_eval`, the reply parsed with `parse_pred`
(no match: score 0); when the recognition answer is "No", every later score is at most 0. Per annotation
`positive` = mean of its positive scores and `negative` = mean of its negative scores (annotations without
negatives are left out of `negative`); the task reports their means and `average` = (positive + negative) / 2,
as DLC-Bench does (scores in [-1, 1]).

Differs from the original: the judge is the configured one (the original hard-codes `gpt-4-0409` and ignores
`--model`); a recognition reply that matches neither Yes nor No counts as "No" (the original raises); an
annotation without questions in `qa.json` is not judged (the original only judges `qa.json`'s keys); a document
whose mask cannot be read is counted in `invalid_docs`. Articles and plurals of the class names use `inflect`
when it is installed (as the original), else a simple English rule.
"""

import json

from pixelrefer_hf.eval_tasks.documents import (
    RegionQuery,
    coco_region,
    data_root,
    documents_dataset,
    is_invalid,
    raw,
    read_published,
)
from pixelrefer_hf.eval_tasks.judge import active_judge, judged, mean_of


SOURCE = "https://huggingface.co/datasets/nvidia/DLC-Bench"
FOLDER = "dlc_bench"
PROMPT = "Please describe the region <region> in the image in detail. Do not describe anything else."
PROMPT_EVAL = """Answer the multiple-choice question based on the text description of an object in an image. You need to follow these rules:
1. Do not output any reasoning. Do not perform correction. Please output exactly one answer from the choices for each question. Do not repeat the question.
2. There is no need for exact matching. Please choose the closest option based on the description.

The description is:
{pred_caption}

From the description above, please answer the following question with one of the choices:
{question_text_str}
"""  # noqa: E501  (verbatim, `dam/eval.py` L24-33)
LETTERS = "abcde"
METRICS = ("positive", "negative", "average")


def process_docs(dataset):
    """One row per annotation of the published `annotations.json`, with its class name and `qa.json` questions."""
    coco = read_published(f"{FOLDER}/annotations.json", SOURCE)
    qa = read_published(f"{FOLDER}/qa.json", SOURCE)
    class_names = read_published(f"{FOLDER}/class_names.json", SOURCE)
    by_image = {}
    for annotation in coco["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    rows = []
    for image in coco["images"]:
        for annotation in by_image.get(image["id"], []):
            key = str(annotation["id"])
            rows.append(
                {
                    "doc_id": key,
                    "reference": class_names.get(key, ""),
                    "questions": json.dumps(qa.get(key)),
                    "document": {"image": image, "annotation": annotation},
                }
            )
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


def doc_to_visual(doc):
    element = raw(doc)
    image, annotation = element["image"], element["annotation"]
    height, width = image.get("height"), image.get("width")
    region = coco_region(annotation.get("segmentation"), height, width, doc["doc_id"])
    path = data_root() / FOLDER / "images" / image["file_name"]
    size = (height, width) if height and width else None
    return [RegionQuery(image=str(path), regions=[region], doc_id=doc["doc_id"], image_size=size)]


def _article(name: str) -> str:
    try:
        import inflect

        return inflect.engine().a(name)
    except ImportError:
        return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def is_plural(name: str) -> bool:
    """Whether a class name is plural (`inflect.singular_noun`, as the original; "bus" is singular)."""
    if name == "bus":
        return False
    try:
        import inflect

        return inflect.engine().singular_noun(name) is not False
    except ImportError:
        last = name.split()[-1].lower() if name.split() else ""
        return last.endswith("s") and not last.endswith(("ss", "us", "is"))


def recognition_question(class_name: str) -> dict:
    """The question DAM asks first: is the described object of the benchmark's class?"""
    if is_plural(class_name):
        text = (
            f"Is it likely that the objects in the description are {class_name} or objects of a similar type? "
            "Again, It does not have to be an exact match."
        )
    else:
        text = (
            f"Is it likely that the object in the description is {_article(class_name)} or an object of a similar "
            "type? Again, It does not have to be an exact match."
        )
    return {"question": text, "choices": [["Yes", "correct"], ["No", "incorrect"]], "type": "recognition"}


def question_prompt(caption: str, question: dict) -> str:
    """`prompt_eval` for one question, its choices rendered `A. text` (one a line)."""
    text = f"{question['question']}\n"
    text += "".join(f"{'ABCDE'[i]}. {choice}\n" for i, (choice, _) in enumerate(question["choices"]))
    return PROMPT_EVAL.format(pred_caption=caption, question_text_str=text.strip())


def parse_choice(reply: str, choices: list[str]) -> int | None:
    """The index of the choice a judge reply picks, by DAM's `parse_pred` rules (in order): the exact choice,
    `"x. choice"` or the bare letter; the only choice the reply contains; a reply starting `"x."`; the choice
    appearing last (longest at a tie); the longest choice containing the reply; a lone letter on the first line;
    else `None`."""
    pred = reply.strip().lower()
    if not pred:
        return None
    found = []
    for index, choice in enumerate(choices):
        choice = choice.strip().lower()
        if pred in (choice, f"{LETTERS[index]}. {choice}", LETTERS[index]):
            return index
        if choice in pred:
            found.append((index, pred.index(choice), len(choice)))
    if len(found) == 1:
        return found[0][0]
    if len(pred) > 1 and pred[0] in LETTERS and pred[1] == ".":
        return LETTERS.index(pred[0])
    if found:
        last = max(position for _, position, _ in found)
        return max((item for item in found if item[1] == last), key=lambda item: item[2])[0]
    containing = [(index, len(choice)) for index, choice in enumerate(choices) if pred in choice.strip().lower()]
    if containing:
        return max(containing, key=lambda item: item[1])[0]
    if pred[0] in LETTERS and (len(pred) == 1 or pred[1] == "\n"):
        return LETTERS.index(pred[0])
    return None


def choice_score(reply: str, question: dict):
    """The score of the choice a reply picks (0 when it picks none, as the original)."""
    index = parse_choice(reply, [choice for choice, _ in question["choices"]])
    if index is None or index >= len(question["choices"]):
        return 0
    return question["choices"][index][1]


def annotation_scores(replies: list[str], questions: list[dict]) -> dict:
    """`positive`, `negative` (None without negative questions) and `recognized` of one annotation from the judge's
    replies to its questions (the recognition question first)."""
    recognized = choice_score(replies[0], questions[0]) == "correct"
    positives, negatives = [], []
    for reply, question in zip(replies[1:], questions[1:]):
        score = float(choice_score(reply, question))
        if not recognized:
            score = min(0.0, score)
        (negatives if question["type"] == "negative" else positives).append(score)
    return {
        "positive": sum(positives) / len(positives) if positives else None,
        "negative": sum(negatives) / len(negatives) if negatives else None,
        "recognized": recognized,
    }


def process_results(doc, results):
    """Judges the caption (unless the document is invalid or no judge is configured)."""
    prediction = results[0]
    questions = json.loads(doc["questions"])
    result = {"doc_id": doc["doc_id"]}
    judge = active_judge() if questions else None
    if judge is None or is_invalid(prediction):
        return judged(result, prediction, **(dict.fromkeys(METRICS) if judge else {}))
    questions = [recognition_question(doc["reference"]), *questions]
    replies = [judge.ask(question_prompt(prediction, question)) for question in questions]
    scores = annotation_scores(replies, questions)
    both = [score for score in (scores["positive"], scores["negative"]) if score is not None]
    average = sum(both) / len(both) if both else None
    result = {**result, **scores, "replies": replies}
    return judged(result, prediction, positive=scores["positive"], negative=scores["negative"], average=average)


def aggregate_positive(items):
    """Average Positive: mean over the annotations."""
    return mean_of(items, "positive")


def aggregate_negative(items):
    """Average Negative: mean over the annotations that have negative questions."""
    return mean_of(items, "negative")


def aggregate_average(items):
    """(Average Positive + Average Negative) / 2."""
    return (mean_of(items, "positive") + mean_of(items, "negative")) / 2
