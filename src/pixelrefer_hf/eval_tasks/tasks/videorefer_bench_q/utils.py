"""VideoRefer-Bench-Q (multiple choice on objects in videos): `VideoRefer-Bench-Q.json` (Lite:
`VideoRefer-Bench-Q-allframe.json`) and the DAVIS / MeViS frame folders it names, under
`PIXELREFER_EVAL_DATA/videorefer_bench_q/`.

The prompt and the answer parsing are the original's (`infer_videorefer_q.py`, `eval_videorefer_q_bench.py`).
Differs from the original: a document whose masks cannot be read is counted in `invalid_docs` instead of being
answered "A" (the original's fallback) or replaced by a random other document.
"""

import re

from pixelrefer_hf.eval_tasks.documents import (
    data_root,
    documents_dataset,
    object_only,
    raw,
    read_published,
    videorefer_query,
)
from pixelrefer_hf.eval_tasks.scoring import mean_by, scored


SOURCE = "https://huggingface.co/datasets/DAMO-NLP-SG/VideoRefer-Bench (Lite: CircleRadon/referring_evaluation)"
FILES = {
    False: "videorefer_bench_q/VideoRefer-Bench-Q.json",
    True: "videorefer_bench_q/VideoRefer-Bench-Q-allframe.json",
}
PROMPT_SUFFIX = ". Answer with the option's letter from the given choices directly."


def process_docs(dataset):
    """The published questions (the stub the YAML loads is replaced), one row per question."""
    elements = read_published(FILES[object_only()], SOURCE)
    rows = [
        {"doc_id": str(e.get("id", i)), "type": e.get("type", ""), "answer": e.get("Answer", ""), "document": e}
        for i, e in enumerate(elements)
    ]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    element = raw(doc)
    return element["Question"] + " " + " ".join(element["options"]) + PROMPT_SUFFIX


def doc_to_visual(doc):
    return videorefer_query(raw(doc), data_root() / "videorefer_bench_q" / "videos", doc["doc_id"])


def answer_letter(text: str) -> str | None:
    """The option letter of a reply, as the original parses it: `(X)`, else `X)`, else the first character."""
    for pattern in (r"\(([A-Z])\)", r"([A-Z])\)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    stripped = text.replace(".", "").strip()
    return stripped[0].upper() if stripped else None


def process_results(doc, results):
    prediction = results[0]
    correct = answer_letter(prediction) == answer_letter(doc["answer"])
    return scored({"type": doc["type"], "doc_id": doc["doc_id"]}, prediction, accuracy=float(correct))


def aggregate_accuracy(items):
    """Accuracy per question type and overall (micro over all questions)."""
    return mean_by(items, "type")
