"""Scoring shared by the region tasks: invalid documents kept out of every metric and counted, means per group."""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from transformers.utils import logging

from .documents import is_invalid


logger = logging.get_logger(__name__)


def scored(result: dict, prediction: str, **scores: Any) -> dict[str, Any]:
    """`process_results` output: each metric gets `{**result, "score": value}`, or `None` for an invalid document,
    and `invalid_docs` counts it."""
    if is_invalid(prediction):
        return {**dict.fromkeys(scores), "invalid_docs": 1}
    return {**{name: {**result, "score": value} for name, value in scores.items()}, "invalid_docs": 0}


def valid(items: Iterable[dict | None]) -> list[dict]:
    return [item for item in items if item is not None]


def mean_score(items: Iterable[dict | None]) -> float:
    """Mean `score` over the valid documents (NaN if there is none)."""
    scores = [item["score"] for item in valid(items)]
    return sum(scores) / len(scores) if scores else float("nan")


def mean_by(items: Iterable[dict | None], key: str) -> dict[str, float]:
    """Mean `score` per value of `key`, and `"overall"` over all valid documents."""
    groups = defaultdict(list)
    for item in valid(items):
        groups[item[key]].append(item["score"])
    means = {group: sum(scores) / len(scores) for group, scores in sorted(groups.items())}
    all_scores = [score for scores in groups.values() for score in scores]
    means["overall"] = sum(all_scores) / len(all_scores) if all_scores else float("nan")
    return means


def count_invalid(counts: Iterable[int]) -> int:
    total = sum(counts)
    if total:
        logger.warning("%d invalid documents were not scored (see the warnings above for each).", total)
    return total


__all__ = ["count_invalid", "mean_by", "mean_score", "scored", "valid"]
