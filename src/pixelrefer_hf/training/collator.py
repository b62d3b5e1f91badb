"""Batches of training samples: text padded (or packed into one row), media and region inputs joined sample after
sample.

Every media and region input is concatenated over the samples of a batch with indices local to each sample (see
`PixelReferModel`), so joining per-sample processor outputs in order is a valid batch of any mix of image, video and
text-only samples.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .dataset import IGNORE_INDEX


logger = logging.get_logger(__name__)

TEXT_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass
class PixelReferDataCollator:
    """Joins dataset items (each the processor's output for ONE sample, `input_ids` `(1, L_i)`, plus `labels`) into a
    batch for `PixelReferForConditionalGeneration`.

    Args:
        pad_token_id: the tokenizer's pad id.
        padding_side: `"right"` (default; training needs no left padding) or `"left"`.
        pad_to_multiple_of: pad the sequence length to a multiple of this.
        packing: padding-free batches, as the original trains: all samples in one row `(1, sum(L_i))`, `position_ids`
            restarting at 0 for each sample, no `attention_mask`, the label of each sample's first token ignored, and
            `use_cache=False` (transformers derives the per-sample attention blocks from `position_ids` only without a
            cache; with one, samples would attend to each other).

    Items that are `None` (samples the dataset skipped with `skip_bad_samples=True`) are left out.
    """

    pad_token_id: int
    padding_side: str = "right"
    pad_to_multiple_of: int | None = None
    packing: bool = False

    def __post_init__(self):
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}")

    def __call__(self, items: Sequence[dict | None]) -> dict[str, torch.Tensor | bool]:
        kept = [item for item in items if item is not None]
        if not kept:
            raise ValueError(
                f"All {len(items)} samples of this batch were skipped as bad; run `pixelrefer train --check-data` "
                "to list them, fix or remove them, or use a larger batch."
            )
        batch = self._pack(kept) if self.packing else self._pad(kept)
        for key in dict.fromkeys(key for item in kept for key in item if key not in TEXT_KEYS):
            batch[key] = torch.cat([torch.as_tensor(item[key]) for item in kept if key in item])
        if self.packing and "region_view_ids" in batch:
            batch["region_view_ids"] = _packed_view_ids(kept)
        return batch

    def _pad(self, items: list[dict]) -> dict[str, torch.Tensor]:
        """`input_ids`, `attention_mask` and `labels` `(B, L)`, padded to the longest sample."""
        length = max(item["input_ids"].shape[-1] for item in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        fills = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        batch = {}
        for key, fill in fills.items():
            if key in items[0] or key == "attention_mask":
                rows = [_row(item, key) for item in items]
                batch[key] = torch.stack([self._pad_row(row, length, fill) for row in rows])
        return batch

    def _pad_row(self, row: torch.Tensor, length: int, fill: int) -> torch.Tensor:
        padding = row.new_full((length - len(row),), fill)
        return torch.cat([row, padding] if self.padding_side == "right" else [padding, row])

    @staticmethod
    def _pack(items: list[dict]) -> dict[str, torch.Tensor]:
        """All samples in one row `(1, sum(L_i))` with per-sample `position_ids`, without padding."""
        rows = [_row(item, "input_ids")[_row(item, "attention_mask").bool()] for item in items]
        batch = {
            "input_ids": torch.cat(rows)[None],
            "position_ids": torch.cat([torch.arange(len(row)) for row in rows])[None],
            "use_cache": False,
        }
        if "labels" in items[0]:
            labels = [_row(item, "labels")[_row(item, "attention_mask").bool()].clone() for item in items]
            for sample_labels in labels:
                sample_labels[0] = IGNORE_INDEX
            batch["labels"] = torch.cat(labels)[None]
        return batch


def _packed_view_ids(items: list[dict]) -> torch.LongTensor:
    """Lite's view indices of packed samples: local to the one packed row, i.e. offset by the context images of the
    samples before (each sample has two context views, global and local, per image with regions)."""
    view_ids, offset = [], 0
    for item in items:
        if "region_view_ids" in item:
            view_ids.append(torch.as_tensor(item["region_view_ids"]) + offset)
            offset += len(item["region_context_grid_thw"]) // 2
    return torch.cat(view_ids)


def _row(item: dict, key: str) -> torch.Tensor:
    """One sample's `(L,)` text tensor (`attention_mask` defaults to all ones)."""
    if key not in item:
        return torch.ones_like(_row(item, "input_ids"))
    value = torch.as_tensor(item[key])
    if value.ndim == 2 and value.shape[0] != 1:
        raise ValueError(
            f"A dataset item's {key} has shape {tuple(value.shape)}; the collator joins items of ONE sample each "
            "((1, L) or (L,)), as the processor returns them for one conversation."
        )
    return value.reshape(-1)


__all__ = ["PixelReferDataCollator"]
