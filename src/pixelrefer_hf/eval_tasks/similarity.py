"""The LVIS / PACO category metrics of the original (`EVAL/eval_paco_lvis.py`).

Prediction and answer both go through `process()`; **semantic IoU** is the word-set IoU of the two, **semantic
similarity** the cosine of their sentence-transformers `all-MiniLM-L6-v2` embeddings; both are averaged over all
regions. The similarity needs `sentence_transformers` and a local copy of the model named by
`PIXELREFER_EVAL_EMBEDDING_MODEL`; without them it is NaN (one warning says why) and semantic IoU still reports.
"""

import math
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from transformers.utils import logging

from .scoring import valid


logger = logging.get_logger(__name__)

EMBEDDING_ENV = "PIXELREFER_EVAL_EMBEDDING_MODEL"
_PUNCTUATION = re.compile(r"[_:,.()]")
_WARNED = {"embedding": False}


def process(text: str) -> str:
    """`_ : , . ( )` replaced by spaces, then stripped and lower-cased (the original's `process`)."""
    return _PUNCTUATION.sub(" ", text).strip().lower()


def semantic_iou(prediction: str, answer: str) -> float:
    """IoU of the word sets of the processed prediction and answer (0 when both are empty, where the original
    divides by zero)."""
    predicted, expected = set(process(prediction).split()), set(process(answer).split())
    union = predicted | expected
    return len(predicted & expected) / len(union) if union else 0.0


@lru_cache(maxsize=1)
def _embedding_model():
    """The sentence-transformers model of `PIXELREFER_EVAL_EMBEDDING_MODEL`, or None (warned once)."""
    path = os.environ.get(EMBEDDING_ENV)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return _no_embedding("the sentence_transformers package is not installed")
    if not path:
        return _no_embedding(f"{EMBEDDING_ENV} is not set")
    if not os.path.exists(path):
        return _no_embedding(f"{EMBEDDING_ENV}={path} does not exist")
    return SentenceTransformer(path)


def _no_embedding(reason: str) -> None:
    if not _WARNED["embedding"]:
        _WARNED["embedding"] = True
        logger.warning(
            "Semantic similarity is not computed (NaN): %s. Install sentence-transformers and set %s to a local copy "
            "of sentence-transformers/all-MiniLM-L6-v2 to report it.",
            reason,
            EMBEDDING_ENV,
        )
    return None


def semantic_similarities(predictions: Sequence[str], answers: Sequence[str]) -> list[float] | None:
    """Cosine similarity of each processed prediction with its processed answer, or None without the model."""
    model = _embedding_model()
    if model is None:
        return None
    from sentence_transformers import util

    predicted = model.encode([process(p) for p in predictions], convert_to_tensor=True)
    expected = model.encode([process(a) for a in answers], convert_to_tensor=True)
    return [float(util.cos_sim(p, a)) for p, a in zip(predicted, expected)]


def mean_semantic_similarity(items: Iterable[dict | None]) -> float:
    """Mean semantic similarity over the valid items (`{"prediction", "answer"}`); NaN without the model."""
    items = valid(items)
    if not items:
        return math.nan
    similarities = semantic_similarities([i["prediction"] for i in items], [i["answer"] for i in items])
    return math.nan if similarities is None else sum(similarities) / len(similarities)


__all__ = ["EMBEDDING_ENV", "mean_semantic_similarity", "process", "semantic_iou", "semantic_similarities"]
