"""Generation for many conversations at once, in batches of similar prompt lengths.

A batch runs the LLM at its longest prompt, so batching prompts of very different lengths (a video beside a small
image: hundreds vs thousands of tokens) can be slower than answering them one by one. Here each conversation is
encoded alone, the encoded samples are sorted by length (longest first) within windows of a few batches and joined
into left-padded batches that hold at most a set fraction of padding, and generated; the answers come back in the
order of the conversations, each the same as its batch-of-1 answer.
"""

from collections.abc import Iterator, Sequence

import torch
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

from .training.collator import PixelReferDataCollator


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, max_padding: float | None = 0.25
) -> list[list[int]]:
    """Indices of the samples in batches of at most `batch_size`, longest first (ties in input order).

    A batch also closes before it is full when the next sample would make its padding more than `max_padding` of its
    tokens (with left padding every sample runs at the batch's first, longest length), so that batching never costs
    much more compute than the samples alone; `None` fills every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches: list[list[int]] = []
    tokens = 0
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batches and len(batches[-1]) < batch_size:
            padded = (len(batches[-1]) + 1) * lengths[batches[-1][0]]
            if max_padding is None or padded <= (1 + max_padding) * (tokens + lengths[index]):
                batches[-1].append(index)
                tokens += lengths[index]
                continue
        batches.append([index])
        tokens = lengths[index]
    return batches


def collate_encoded(samples: Sequence[BatchFeature], pad_token_id: int) -> BatchFeature:
    """One left-padded batch from samples the processor encoded one at a time (`input_ids` `(1, L_i)` each)."""
    collator = PixelReferDataCollator(pad_token_id=pad_token_id, padding_side="left")
    return BatchFeature(collator([dict(sample) for sample in samples]))


def generate_encoded(
    model: PreTrainedModel,
    samples: Sequence[BatchFeature],
    pad_token_id: int,
    batch_size: int = 8,
    max_padding: float | None = 0.25,
    **generate_kwargs,
) -> list[torch.LongTensor]:
    """The new token ids of each encoded sample, generated `batch_size` at a time in batches of similar lengths.

    Args:
        samples: the processor's output for one conversation each.
        max_padding: most padding of a batch, as a fraction of its tokens (see `length_grouped_batches`).
        generate_kwargs: passed to `model.generate` (e.g. `max_new_tokens`, `do_sample`).
    Returns:
        Per sample, in order, its `(new_tokens,)` ids (padding after an early end of sequence included, as `generate`
        returns them).
    """
    lengths = [sample["input_ids"].shape[-1] for sample in samples]
    outputs: list[torch.LongTensor | None] = [None] * len(samples)
    for batch in length_grouped_batches(lengths, batch_size, max_padding):
        inputs = collate_encoded([samples[index] for index in batch], pad_token_id).to(model.device)
        generated = model.generate(**inputs, **generate_kwargs)
        for row, index in enumerate(batch):
            outputs[index] = generated[row, inputs["input_ids"].shape[1] :]
    return outputs


# Conversations are encoded and sorted by prompt length this many batches at a time (bounds encoded media memory).
WINDOW_BATCHES = 8


def windows(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of `items` of `size` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_batched(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    conversations: Sequence[list[dict]],
    batch_size: int = 8,
    window_batches: int = WINDOW_BATCHES,
    **generate_kwargs,
) -> list[str]:
    """Answers to chat conversations (as `processor.apply_chat_template` takes them), generated in batches of similar
    prompt lengths; the conversations are encoded and sorted `batch_size * window_batches` at a time, which bounds the
    memory of encoded media.

    Example:

    ```python
    >>> from pixelrefer_hf.batched_generation import generate_batched
    >>> answers = generate_batched(model, processor, conversations, batch_size=16, max_new_tokens=64)
    ```
    """
    answers = []
    for window in windows(conversations, batch_size * window_batches):
        samples = [
            processor.apply_chat_template([messages], add_generation_prompt=True, tokenize=True, return_dict=True)
            for messages in window
        ]
        new_tokens = generate_encoded(model, samples, processor.tokenizer.pad_token_id, batch_size, **generate_kwargs)
        answers += [processor.decode(ids, skip_special_tokens=True) for ids in new_tokens]
    return answers


__all__ = [
    "WINDOW_BATCHES",
    "collate_encoded",
    "generate_batched",
    "generate_encoded",
    "length_grouped_batches",
    "windows",
]
