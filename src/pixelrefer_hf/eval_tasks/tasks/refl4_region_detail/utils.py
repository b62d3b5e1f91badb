"""Ref-L4 detailed region captions, scored by CLAIR (an LLM judge): `ref-l4-val.json` (JSON Lines despite its name)
of CircleRadon/referring_evaluation under `PIXELREFER_EVAL_DATA/refl4/`, images under
`PIXELREFER_EVAL_DATA/refl4/images/` (the same files as `refl4_region`).

As the original (`infer_refl4_detail.py`, `clair/clair.py`, `clair/merge_score.py`): only lines whose `file_name`
contains `objects365` are evaluated, the region is the box mask of `bbox` `[x, y, w, h]` (cast to int), the prompt
is the detailed one (PixelRefer and Lite alike), the judge gets CLAIR's prompt verbatim with the prediction as the
candidate set and the line's `caption` as the reference set; its score is the first `{...}` JSON's `score`, else the
first number (x100 if below 1), divided by 100; a reply giving neither is asked again, 5 tries in all, then scores 0
(as CLAIR); `clair` is the mean over the documents (0-1).

Differs from the original, where it is broken: the reference set is the one caption (the original passes the
caption *string* as the reference list, so every character becomes one `- c` reference line); the judge is the
configured one (the original hard-codes `gpt-4-0409`); a box outside the image, a missing image or a size other than
the document's is counted in `invalid_docs`.
"""

import json
import re

from pixelrefer_hf.eval_tasks.documents import (
    documents_dataset,
    is_invalid,
)
from pixelrefer_hf.eval_tasks.judge import active_judge, judged, mean_of
from pixelrefer_hf.eval_tasks.refl4 import read_lines, refl4_query


PROMPT = "Please describe <region> in detail."
CLAIR_PROMPT = (
    "You are trying to tell if a candidate set of captions is describing the same image as a reference set of "
    "captions.\nCandidate set:\n{candidate_statements}\nReference set:\n{target_statements}\nOn a precise scale from "
    "0 to 100, how likely is it that the candidate set is describing the same image as the reference set? (JSON "
    'format, with a key "score", value between 0 and 100, and a key "reason" with a string value.)\n'
)
CLAIR_TRIES = 5


def process_docs(dataset):
    """The evaluated lines (the stub the YAML loads is replaced), one row each."""
    rows = [{"doc_id": str(i), "reference": line["caption"], "document": line} for i, line in enumerate(read_lines())]
    return documents_dataset(rows)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT


doc_to_visual = refl4_query


def clair_prompt(candidates: list[str], references: list[str]) -> str:
    return CLAIR_PROMPT.format(
        candidate_statements="".join(f"- {c}\n" for c in candidates),
        target_statements="".join(f"- {t}\n" for t in references),
    )


def parse_clair(reply: str) -> float | None:
    """The 0-100 score of a CLAIR reply: the first `{...}` JSON's `score`, else its first number (x100 if below 1)."""
    try:
        return float(json.loads("{" + reply.split("{")[1].split("}")[0] + "}")["score"])
    except (IndexError, KeyError, TypeError, ValueError):
        pass
    numbers = re.findall(r"\d*\.?\d+", reply)
    if not numbers:
        return None
    score = float(numbers[0])
    return score * 100 if score < 1 else score


def process_results(doc, results):
    """CLAIR of the caption against the reference (unless the document is invalid or no judge is configured)."""
    prediction = results[0]
    result = {"doc_id": doc["doc_id"]}
    judge = active_judge()
    if judge is None or is_invalid(prediction):
        return judged(result, prediction, **({"clair": None} if judge else {}))
    prompt, score, replies = clair_prompt([prediction], [doc["reference"]]), None, []
    while score is None and len(replies) < CLAIR_TRIES:
        replies.append(judge.ask(prompt))
        score = parse_clair(replies[-1])
    return judged({**result, "replies": replies}, prediction, clair=(score or 0.0) / 100)


def aggregate_clair(items):
    """Mean CLAIR score (0-1)."""
    return mean_of(items)
