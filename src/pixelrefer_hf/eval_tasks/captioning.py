"""COCO caption metrics as the original scores VG, Ref-L4 and HC-STVG (`captioning/change2eval_format.py` +
`captioning/eval_cococap.py`): each prediction cut to its first 100 space-separated words, then pycocoevalcap's
`COCOEvalCap` (PTB tokenizer, BLEU-1..4, METEOR, ROUGE_L, CIDEr) on a COCO-caption ground truth of one image per
document.

SPICE, which the original also reports, is left out: it needs the Stanford CoreNLP models that pycocoevalcap
downloads on first use (`spice/get_stanford_models.py`), so it does not run offline.

A task's `process_results` gives every caption metric the same per-document item (`caption_item`); its
aggregations (`aggregate_bleu_1`, ...) call `caption_metric(items, name)`, which scores all documents once (cached)
and returns one metric.
"""

import contextlib
import io
import shutil
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .documents import is_invalid
from .scoring import valid


CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
MAX_WORDS = 100


def truncate(prediction: str, max_words: int = MAX_WORDS) -> str:
    """The prediction as `change2eval_format.py` writes it: its first `max_words` space-separated words."""
    return " ".join(prediction.split(" ")[:max_words])


def caption_item(doc_id: str, references: str | Sequence[str], prediction: str) -> dict:
    """The per-document item of the caption metrics: the ground-truth caption(s) and the prediction."""
    references = [references] if isinstance(references, str) else list(references)
    return {"doc_id": str(doc_id), "references": references, "prediction": prediction}


def caption_results(doc_id: str, references: str | Sequence[str], prediction: str) -> dict:
    """`process_results` output of a caption task: every metric gets the document's `caption_item` (no per-document
    `score`: the metrics are corpus-level), or None for an invalid document, which `invalid_docs` counts."""
    if is_invalid(prediction):
        return {**dict.fromkeys(CAPTION_METRICS), "invalid_docs": 1}
    return {**dict.fromkeys(CAPTION_METRICS, caption_item(doc_id, references, prediction)), "invalid_docs": 0}


def require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "The caption metrics need Java: pycocoevalcap's PTB tokenizer and METEOR run `java`, which is not on "
            "PATH. Install a Java runtime (e.g. `apt-get install default-jre-headless`)."
        )


def caption_scores(items: Iterable[dict | None]) -> dict[str, float]:
    """All caption metrics over the valid items (NaN for each if there is none)."""
    documents = tuple(
        (item["doc_id"], tuple(item["references"]), truncate(item["prediction"])) for item in valid(items)
    )
    if not documents:
        return dict.fromkeys(CAPTION_METRICS, float("nan"))
    return dict(_scores(documents))


def caption_metric(items: Iterable[dict | None], name: str) -> float:
    """One caption metric (`CAPTION_METRICS`) over the valid items."""
    return caption_scores(items)[name]


def aggregate_bleu_1(items: list) -> float:
    return caption_metric(items, "Bleu_1")


def aggregate_bleu_2(items: list) -> float:
    return caption_metric(items, "Bleu_2")


def aggregate_bleu_3(items: list) -> float:
    return caption_metric(items, "Bleu_3")


def aggregate_bleu_4(items: list) -> float:
    return caption_metric(items, "Bleu_4")


def aggregate_meteor(items: list) -> float:
    return caption_metric(items, "METEOR")


def aggregate_rouge_l(items: list) -> float:
    return caption_metric(items, "ROUGE_L")


def aggregate_cider(items: list) -> float:
    return caption_metric(items, "CIDEr")


@lru_cache(maxsize=8)
def _scores(documents: tuple[tuple[str, tuple[str, ...], str], ...]) -> tuple[tuple[str, float], ...]:
    """`COCOEvalCap.evaluate()` without SPICE on `(doc_id, references, prediction)` documents: the same PTB
    tokenization and scorers, on one ground-truth image per document."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    references = {str(i): [{"caption": c} for c in refs] for i, (_, refs, _) in enumerate(documents)}
    predictions = {str(i): [{"caption": prediction}] for i, (_, _, prediction) in enumerate(documents)}
    scores = {}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its progress
        tokenizer = PTBTokenizer()
        references, predictions = tokenizer.tokenize(references), tokenizer.tokenize(predictions)
        for scorer, names in ((Bleu(4), CAPTION_METRICS[:4]), (_meteor(), ["METEOR"]), (Rouge(), ["ROUGE_L"])):
            score, _ = scorer.compute_score(references, predictions)
            scores.update(zip(names, score if isinstance(score, list) else [score]))
        scores["CIDEr"], _ = Cider().compute_score(references, predictions)
    return tuple((name, float(scores[name])) for name in CAPTION_METRICS)


@lru_cache(maxsize=1)
def _meteor():
    """One METEOR process for the whole run (starting it loads its paraphrase tables, ~15 s)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


__all__ = [
    "CAPTION_METRICS",
    "aggregate_bleu_1",
    "aggregate_bleu_2",
    "aggregate_bleu_3",
    "aggregate_bleu_4",
    "aggregate_cider",
    "aggregate_meteor",
    "aggregate_rouge_l",
    "caption_item",
    "caption_results",
    "caption_metric",
    "caption_scores",
    "require_java",
    "truncate",
]
