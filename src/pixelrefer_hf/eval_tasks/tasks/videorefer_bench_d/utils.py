"""VideoRefer-Bench-D (detailed object descriptions in videos, judged by an LLM on four dimensions):
`VideoRefer-Bench-D.json` and the Panda-70M clips it names, under `PIXELREFER_EVAL_DATA/videorefer_bench_d/`
(`videos/<clip>.mp4`).

The prompts are the original's (`infer_videorefer_d.py`: the full model masks `frame_idx` only, Lite every annotated
frame). The judge request is `1.eval_gpt.py`'s (the `system.txt` system message verbatim, the user text
`##Correct answer: ...\\n##Predicted answer: ...\\n`); each of `Subject Correspondence`, `Appearance Description`,
`Temporal Description`, `Hallucination Detection` (0-5) is the mean over the documents whose review gives it, and
`overall` is the mean of the four means (`3.analyze_score.py`).

Differs from the original, where it is broken: the scoring runs in the task (the original's shell script passes
only `--input-file ${MODEL}_gpt.json`, an argparse error, and that glob would match nothing); the review parser
accepts bolded or otherwise decorated names (`1. **Subject Correspondence**: 5`, `**1. Subject Correspondence:** 5`)
where `2.extract_re.py`'s `\\d+\\.\\s+(.*?):\\s+([\\d.]+)` captures `**Subject Correspondence**`, matching
none of the four names; the judge is the configured one (the original hard-codes `gpt-4o-0806`); a document
whose masks cannot be read is counted in `invalid_docs`.
"""

import re

from pixelrefer_hf.eval_tasks.documents import (
    data_root,
    documents_dataset,
    is_invalid,
    object_only,
    raw,
    read_published,
    videorefer_query,
)
from pixelrefer_hf.eval_tasks.judge import active_judge, judged, mean_of


SOURCE = "https://huggingface.co/datasets/DAMO-NLP-SG/VideoRefer-Bench (VideoRefer-Bench-D.json, Panda-70M-part/)"
FILE = "videorefer_bench_d/VideoRefer-Bench-D.json"
PROMPTS = {
    False: "<video>\nPlease describe in detail the marked object <region> in the video.",
    True: "There is one object in the video: <region>.\nPlease describe in detail the marked object in the video.",
}
DIMENSIONS = {
    "subject_correspondence": "Subject Correspondence",
    "appearance_description": "Appearance Description",
    "temporal_description": "Temporal Description",
    "hallucination_detection": "Hallucination Detection",
}
# `system.txt` verbatim (its `\n` are a backslash and an n; the spaces after "Explanation:" are no-break spaces).
SYSTEM = (
    "You are an advanced intelligent chatbot specialized in evaluating the factual accuracy of generative outputs "
    "related to object-based video descriptions.\nYour primary task is to meticulously compare the predicted answer "
    "with the correct answer and assess their factual consistency. To accomplish this, you will evaluate the "
    "descriptions across four key dimensions:\n1. Subject Correspondence: Assess whether the subject of the input "
    "description accurately matches the subject indicated in the ground truth description.\n2. Appearance "
    "Description: Evaluate the accuracy of the appearance details, including color, shape, size, texture, and any "
    "other relevant visual attributes.\n3. Temporal Description: Analyze whether the depiction of the object's "
    "motion aligns with the actual movements described in the correct answer.\n4. Hallucination Detection: Identify "
    "any discrepancies by determining if the description includes facts, actions, or elements that do not exist in "
    "reality, such as imaginative interpretations or incorrect inferences.\nPlease assign a score for each of these "
    "four dimensions, using an integer from 0 to 5, where 5 indicates a perfect match and 0 signifies no relevance "
    "at all. Accompany your assessments with brief explanations to clarify your scoring rationale.\n### OUTPUT "
    "FORMAT(EXAMPLE)\n1. Subject Correspondence: 5\\nExplanation:\xa0xxx\n2. Appearance Description: "
    "4\\nExplanation:\xa0xxx\n3. Temporal Description: 5\\nExplanation:\xa0xxx\n4. Hallucination Detection: "
    "3\\nExplanation:\xa0xxx"
)
# `N. name: score`, the name and the score optionally wrapped in `*`/`_`/`#` decorations (bold, italics).
REVIEW_LINE = re.compile(r"\d+\.[\s*_#]+([A-Za-z][A-Za-z ]*?)[\s*_]*:[\s*_]*(\d+(?:\.\d+)?)")


def process_docs(dataset):
    """The published descriptions (the stub the YAML loads is replaced), one row per document."""
    elements = read_published(FILE, SOURCE)
    rows = [
        {"doc_id": str(e.get("id", i)), "reference": e.get("caption", ""), "document": e}
        for i, e in enumerate(elements)
    ]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPTS[object_only()]


def doc_to_visual(doc):
    return videorefer_query(raw(doc), data_root() / "videorefer_bench_d" / "videos", doc["doc_id"])


def parse_review(review: str) -> dict[str, float]:
    """`{metric: score}` for each of the four dimensions a review scores (the first score of each)."""
    names = {name.lower(): metric for metric, name in DIMENSIONS.items()}
    scores = {}
    for name, value in REVIEW_LINE.findall(review):
        metric = names.get(" ".join(name.split()).lower())
        if metric is not None and metric not in scores:
            scores[metric] = float(value)
    return scores


def judge_message(reference: str, prediction: str) -> str:
    return "##Correct answer: " + reference + "\n" + "##Predicted answer: " + prediction + "\n"


def process_results(doc, results):
    """Judges the description (unless the document is invalid or no judge is configured)."""
    prediction = results[0]
    result = {"doc_id": doc["doc_id"]}
    judge = active_judge()
    if judge is None or is_invalid(prediction):
        return judged(result, prediction, **(dict.fromkeys([*DIMENSIONS, "overall"]) if judge else {}))
    review = judge.ask(judge_message(doc["reference"], prediction), system=SYSTEM)
    scores = parse_review(review)
    result = {**result, **dict.fromkeys(DIMENSIONS), **scores, "review": review}
    mean = sum(scores.values()) / len(scores) if scores else None
    return judged(result, prediction, **{metric: scores.get(metric) for metric in DIMENSIONS}, overall=mean)


def aggregate_subject_correspondence(items):
    return mean_of(items)


def aggregate_appearance_description(items):
    return mean_of(items)


def aggregate_temporal_description(items):
    return mean_of(items)


def aggregate_hallucination_detection(items):
    return mean_of(items)


def aggregate_overall(items):
    """The mean of the four dimensions' means (each over the documents whose review gives it)."""
    return sum(mean_of(items, metric) for metric in DIMENSIONS) / len(DIMENSIONS)
