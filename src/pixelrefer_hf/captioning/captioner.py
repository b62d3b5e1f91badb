"""One caption per region, for many regions of the same images: batched, with the image work shared.

[`RegionCaptioner`] asks one prompt (e.g. `"Please describe <region> in detail."`) about each region it is given
and answers greedily. Three strategies give the same tokens (the tests compare them, ids exactly and scores within
1e-4), with less and less work:

- `"naive"`: one `generate` call per region, the reference.
- `"batched"`: the regions' samples, left-padded, in one `generate` call per batch; every region still has its own
  copy of the image (preprocessed, encoded and prefilled once per region for the full model).
- `"shared"` (the default): the prompt's tokens before the first `<REGION>` token (chat header, for the full model
  every image or video token, the prompt's text) are the same for all regions of an image, so they are prefilled
  ONCE per image (the image encoded once) and every region continues from a copy of that prefix's KV cache: a batch
  holds the prefixes of its images, each region's own tokens (its object tokens and the rest of the prompt) padded
  between its prefix and its end, positions counted without the padding. The full model's region inputs and ids come
  from the region processor alone (the image is preprocessed once). Lite's prompt holds no image tokens (its prefix
  is the chat header); what its regions share is the context: the global view of an image (of a video frame) is
  encoded once for all the regions of the batch on that image (identical views are found by their pixels).

Batches follow the media: the regions of each image (video) are sorted by prompt length, so that a batch pads by a
few object tokens at most, and cut into batches of `batch_size` regions; what is left of consecutive images is packed
into shared batches. A batch whose images have one region each has nothing to share and is generated as in
`"batched"`.
"""

import copy
import hashlib
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, ProcessorMixin
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..model_inputs import IMAGE_INPUT_NAMES, REGION_INPUT_NAMES, VIDEO_INPUT_NAMES
from ..modeling.modeling_pixelrefer import global_view_ids, region_sample_ids
from ..processing.object_crops import PixelReferRegionProcessor, SampleRegions
from ..processing.processing_pixelrefer import IMAGE_TOKEN, REGION_PLACEHOLDER, VIDEO_PLACEHOLDER
from ..processing.video import VideoClip
from ..processing.video_regions import video_regions


STRATEGIES = ("shared", "batched", "naive")
DEFAULT_PROMPT = f"Please describe {REGION_PLACEHOLDER} in detail."
MEDIA_INPUT_NAMES = (*IMAGE_INPUT_NAMES, *VIDEO_INPUT_NAMES)
# The processor's prefix of a message about one region of one sample ("sample 0, region 0: ...").
SAMPLE_PREFIX = re.compile(r"^sample \d+(, region \d+)?: ")


@dataclass
class CaptionItem:
    """One region to caption.

    media: the image, `(H, W, 3)` uint8 RGB, or the video, a [`VideoClip`] holding the frames the region is drawn on.
    region: the region in a form the processor takes (`{"box": ...}`, `{"rle": ...}`, `{"polygon": ...}`,
        `{"mask": ...}`; on a video with `"frame"` or as a `"masklet"`).
    media_key: names the media; items with the same key share it (and its prefix).
    """

    media: np.ndarray | VideoClip
    region: dict
    media_key: Hashable


@dataclass
class RegionCaption:
    """The caption of one region, or why there is none.

    text: the decoded caption (special tokens left out, stripped); None when `error` is set.
    token_ids: the generated ids, up to and including the end-of-sequence token.
    object_tokens: how many `<REGION>` tokens the region became in the prompt.
    error: why the region could not be captioned (a bad mask, a region outside its image, ...).
    scores: with `output_scores=True`, the logits of every generated step, `(len(token_ids), vocab_size)`.
    """

    text: str | None
    token_ids: list[int] = field(default_factory=list)
    object_tokens: int = 0
    error: str | None = None
    scores: torch.Tensor | None = None


@dataclass
class _Sample:
    """One region's model inputs: its prompt ids `(L,)`, its region inputs and its media inputs (shared by the
    samples of the same media in the `"shared"` strategy, per sample otherwise)."""

    index: int
    media_key: Hashable
    input_ids: torch.LongTensor
    region_inputs: dict[str, torch.Tensor]
    media_inputs: dict[str, torch.Tensor]
    object_tokens: int


@dataclass
class _Prefix:
    """The KV cache of the prefixes of a batch's media, one row per media, left-padded: ids and mask `(M, P)`."""

    media_keys: tuple
    input_ids: torch.LongTensor
    attention_mask: torch.LongTensor
    cache: DynamicCache


class RegionCaptioner:
    """Captions regions with a PixelRefer or PixelRefer-Lite model (see the module docstring for the strategies).

    Args:
        model: a [`PixelReferForConditionalGeneration`], in eval mode, on its device.
        processor: its [`PixelReferProcessor`].
        prompt: the question asked about every region, with one `<region>` (a prompt without one gets
            `"<region>\\n"` in front); no `<image>` or `<video>` (the media goes before the prompt).
        batch_size: most regions per `generate` call.
        max_new_tokens: longest caption, in tokens.
        strategy: `"shared"`, `"batched"` or `"naive"`.
        output_scores: keep each step's logits in the captions (for comparing strategies).
        generate_kwargs: further `generate` options (e.g. `min_new_tokens`); decoding is always greedy.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        prompt: str = DEFAULT_PROMPT,
        *,
        batch_size: int = 8,
        max_new_tokens: int = 64,
        strategy: str = "shared",
        output_scores: bool = False,
        **generate_kwargs,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) must be >= 1")
        self.model, self.processor = model, processor
        self.prompt = check_prompt(prompt)
        self.batch_size = 1 if strategy == "naive" else batch_size
        self.strategy = strategy
        self.object_only = bool(model.config.object_only)
        self.region_processor = processor.region_processor
        self.region_token_id = processor.region_token_id
        # Here, not above: `pixelrefer_hf.training` imports the Trainer, which `pixelrefer` need not load to start.
        from ..training.collator import PixelReferDataCollator

        self.collator = PixelReferDataCollator(processor.tokenizer.pad_token_id, padding_side="left")
        self.generation = {
            **generate_kwargs,
            "max_new_tokens": max_new_tokens,
            "do_sample": False,
            "num_beams": 1,
            "return_dict_in_generate": True,
            "output_scores": output_scores,
        }
        self._prefix: _Prefix | None = None

    @torch.inference_mode()
    def caption(self, items: Sequence[CaptionItem]) -> list[RegionCaption]:
        """Captions `items`, one [`RegionCaption`] per item in their order; a bad region gets its `error`."""
        results: dict[int, RegionCaption] = {}
        samples = []
        for group in _by_media(items):
            for index, sample in self._prepare(group):
                if isinstance(sample, str):
                    results[index] = RegionCaption(text=None, error=sample)
                else:
                    samples.append(sample)
        prefix_lengths = self._prefix_lengths(samples)
        regions_per_media = Counter(sample.media_key for sample in samples)
        try:
            for batch in self._batches(samples):
                # A media with one region has nothing to share: its sample goes the padded way, in one prefill.
                if self.strategy == "shared" and any(regions_per_media[sample.media_key] > 1 for sample in batch):
                    captions = self._generate_shared(batch, prefix_lengths)
                else:
                    captions = self._generate_padded(batch)
                results.update(zip((sample.index for sample in batch), captions))
        finally:
            self._prefix = None  # media keys name media within one call only
        return [results[index] for index in range(len(items))]

    # Inputs.

    def _prepare(self, group: list[tuple[int, CaptionItem]]) -> list[tuple[int, _Sample | str]]:
        """The samples of the regions of one media (or, for a bad region, why it cannot be captioned)."""
        if self.strategy == "shared" and not self.object_only:
            return self._prepare_spliced(group)
        return [(index, self._processed(index, item)) for index, item in group]

    def _processed(self, index: int, item: CaptionItem) -> _Sample | str:
        """One region as the processor makes it, alone in its sample."""
        messages = caption_messages(item.media, self.prompt, item.region)
        try:
            inputs = self.processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
        except (ValueError, TypeError) as error:
            return _reason(error)
        ids = inputs["input_ids"][0]
        return _Sample(
            index,
            item.media_key,
            ids,
            {name: inputs[name] for name in REGION_INPUT_NAMES if name in inputs},
            {name: inputs[name] for name in MEDIA_INPUT_NAMES if name in inputs},
            int((ids == self.region_token_id).sum()),
        )

    def _prepare_spliced(self, group: list[tuple[int, CaptionItem]]) -> list[tuple[int, _Sample | str]]:
        """The full model's samples of one media with the media preprocessed ONCE: the processor makes the first
        region's sample; every other region gets its region inputs from the region processor and the same ids with
        its own number of `<REGION>` tokens (the text around them is the same, and `<REGION>` is a special token, so
        the tokenizer splits there and the other tokens cannot change)."""
        crops: list[tuple[int, SampleRegions | str]] = []
        for index, item in group:
            try:
                crops.append((index, self._sample_regions(item)))
            except (ValueError, TypeError) as error:
                crops.append((index, _reason(error)))
        good = [(index, regions) for index, regions in crops if not isinstance(regions, str)]
        if not good:
            return crops
        first = dict(group)[good[0][0]]
        template = self._processed(good[0][0], first)
        if isinstance(template, str):  # the media itself cannot be processed
            return [(index, template) for index, _ in group]
        positions = torch.nonzero(template.input_ids == self.region_token_id)[:, 0]
        start, count = int(positions[0]), len(positions)
        before, after = template.input_ids[:start], template.input_ids[start + count :]
        samples = dict(crops)
        for index, regions in good:
            tokens = regions.crops[0].num_tokens
            ids = torch.cat([before, before.new_full((tokens,), self.region_token_id), after])
            inputs = PixelReferRegionProcessor.batch([regions])
            samples[index] = _Sample(index, first.media_key, ids, inputs, template.media_inputs, tokens)
        return [(index, samples[index]) for index, _ in group]

    def _sample_regions(self, item: CaptionItem) -> SampleRegions:
        """The full model's crop of a region, on its image or on its key frame of the video."""
        if isinstance(item.media, VideoClip):
            on_video = video_regions(
                item.media,
                [item.region],
                object_only=False,
                fps=self.processor.video_fps,
                max_frames=self.processor.video_max_frames,
            )
            return self.region_processor(on_video.frames, on_video.regions)
        return self.region_processor([item.media], [item.region])

    def _batches(self, samples: list[_Sample]) -> list[list[_Sample]]:
        """Batches of at most `batch_size` samples, media after media, each media's samples by prompt length: the
        full batches of a media on their own (so that they reuse its prefix), the rest of consecutive media packed
        together."""
        by_media: dict[Hashable, list[_Sample]] = {}
        for sample in samples:
            by_media.setdefault(sample.media_key, []).append(sample)
        batches, packed = [], []
        for group in by_media.values():
            group = sorted(group, key=lambda sample: (len(sample.input_ids), sample.index))
            full = len(group) - len(group) % self.batch_size
            batches += [group[start : start + self.batch_size] for start in range(0, full, self.batch_size)]
            if len(packed) + len(group) - full > self.batch_size:
                batches.append(packed)
                packed = []
            packed += group[full:]
        return batches + ([packed] if packed else [])

    # Generation.

    def _generate_padded(self, batch: list[_Sample]) -> list[RegionCaption]:
        """`"batched"` and `"naive"`: the samples left-padded into one `generate` call."""
        items = [{"input_ids": s.input_ids[None], **s.media_inputs, **s.region_inputs} for s in batch]
        inputs = _to(self.collator(items), self.model.device)
        output = self.model.generate(**inputs, **self.generation)
        return self._captions(output, inputs["input_ids"].shape[1], batch)

    def _generate_shared(self, batch: list[_Sample], prefix_lengths: dict[Hashable, int]) -> list[RegionCaption]:
        """`"shared"`: each sample continues its media's prefix (see the module docstring)."""
        prefix = self._prefix_of(batch, prefix_lengths)
        rows = torch.tensor([prefix.media_keys.index(s.media_key) for s in batch])
        suffixes = [s.input_ids[prefix_lengths[s.media_key] :] for s in batch]
        length = max(len(suffix) for suffix in suffixes)
        pad = self.processor.tokenizer.pad_token_id
        suffix_ids = torch.stack([torch.cat([s.new_full((length - len(s),), pad), s]) for s in suffixes])
        suffix_mask = torch.stack([(torch.arange(length) >= length - len(s)).long() for s in suffixes])
        input_ids = torch.cat([prefix.input_ids[rows], suffix_ids], dim=1)
        attention_mask = torch.cat([prefix.attention_mask[rows], suffix_mask], dim=1)
        cache = copy.deepcopy(prefix.cache)
        cache.batch_select_indices(rows.to(self.model.device))
        regions = self._region_features(_concat([s.region_inputs for s in batch]), input_ids)
        output = self.model.generate(
            input_ids=input_ids.to(self.model.device),
            attention_mask=attention_mask.to(self.model.device),
            past_key_values=cache,
            mm_encoder_outputs={"region": regions},
            **self.generation,
        )
        return self._captions(output, input_ids.shape[1], batch)

    def _prefix_lengths(self, samples: list[_Sample]) -> dict[Hashable, int]:
        """Per media, how many leading ids all its samples share, up to their first `<REGION>` token."""
        lengths: dict[Hashable, int] = {}
        firsts: dict[Hashable, torch.LongTensor] = {}
        for sample in samples:
            ids = sample.input_ids
            region_start = int(torch.nonzero(ids == self.region_token_id)[0, 0])
            first = firsts.setdefault(sample.media_key, ids)
            common = min(len(first), len(ids))
            differ = torch.nonzero(first[:common] != ids[:common])
            shared = int(differ[0, 0]) if len(differ) else common
            lengths[sample.media_key] = min(lengths.get(sample.media_key, region_start), region_start, shared)
        return lengths

    def _prefix_of(self, batch: list[_Sample], lengths: dict[Hashable, int]) -> _Prefix:
        """The prefixes of the batch's media, prefilled in one forward (kept for the next batch of the same media)."""
        media_keys = tuple(dict.fromkeys(s.media_key for s in batch))
        if self._prefix is not None and self._prefix.media_keys == media_keys:
            return self._prefix
        firsts = {s.media_key: s for s in reversed(batch)}
        items = [
            {"input_ids": firsts[key].input_ids[None, : lengths[key]], **firsts[key].media_inputs}
            for key in media_keys
        ]
        inputs = _to(self.collator(items), self.model.device)
        cache = DynamicCache(config=self.model.config)
        self.model(
            **inputs,
            position_ids=(inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._prefix = _Prefix(media_keys, inputs["input_ids"].cpu(), inputs["attention_mask"].cpu(), cache)
        return self._prefix

    def _region_features(self, inputs: dict[str, torch.Tensor], input_ids: torch.LongTensor):
        """Object tokens of the batch's regions (one tensor per region); for Lite, each distinct context view is
        encoded once."""
        if not self.object_only:
            return self.model.model.get_region_features(**_to(inputs, self.model.device))
        return self._lite_region_features(inputs, input_ids)

    def _lite_region_features(self, inputs: dict[str, torch.Tensor], input_ids: torch.LongTensor):
        """Lite's object tokens with the identical context views of the batch (the global view of an image its
        regions share) encoded once: the crops and the distinct views in one vision-encoder call, each region then
        reading its own views, as `PixelReferModel.get_region_features` does."""
        model = self.model.model
        grid = inputs["region_context_grid_thw"]
        views = inputs["region_context_pixel_values"].split(grid.prod(-1).tolist())
        slots: dict[bytes, int] = {}
        slot_of_view = [slots.setdefault(_digest(view), len(slots)) for view in views]
        distinct = [slot_of_view.index(slot) for slot in range(len(slots))]
        inputs = _to(inputs, self.model.device)
        crop_grid, distinct_grid = inputs["region_grid_thw"], grid[distinct].to(self.model.device)
        crop_features, view_features = model.encode_vision(
            [
                (inputs["region_pixel_values"], crop_grid, torch.ones_like(crop_grid[:, 0])),
                (
                    torch.cat([views[i] for i in distinct]).to(self.model.device),
                    distinct_grid,
                    torch.ones_like(distinct_grid[:, 0]),
                ),
            ]
        )
        per_view = view_features.split(distinct_grid.prod(-1).tolist())
        context = torch.cat([per_view[slot] for slot in slot_of_view])
        tokens_per_region = model.tokens_per_region(inputs["region_masks"], inputs["region_mask_hw"])
        sample_ids = region_sample_ids(input_ids.to(self.model.device) == self.region_token_id, tokens_per_region)
        view_ids = global_view_ids(inputs["region_view_ids"], sample_ids, len(views) // 2)
        tokens = model.object_tokens(
            crop_features,
            crop_grid,
            inputs["region_masks"],
            inputs["region_mask_hw"],
            inputs["region_boxes"],
            context_features=context,
            region_context_grid_thw=inputs["region_context_grid_thw"],
            view_ids=view_ids,
        )
        return BaseModelOutputWithPooling(pooler_output=tokens.split(tokens_per_region.tolist()))

    def _captions(self, output, prompt_length: int, batch: list[_Sample]) -> list[RegionCaption]:
        """Each row's generated ids up to its end-of-sequence token, decoded."""
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        captions = []
        for row, sample in enumerate(batch):
            ids = output.sequences[row, prompt_length:].tolist()
            end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
            scores = None
            if output.scores is not None:
                scores = torch.stack([step[row] for step in output.scores[:end]]).float().cpu()
            text = self.processor.tokenizer.decode(ids[:end], skip_special_tokens=True).strip()
            captions.append(RegionCaption(text, ids[:end], sample.object_tokens, scores=scores))
        return captions


def check_prompt(prompt: str) -> str:
    """The prompt with exactly one `<region>` (one is put in front of a prompt without), or a `ValueError`."""
    for media in (IMAGE_TOKEN, VIDEO_PLACEHOLDER):
        if media in prompt:
            raise ValueError(
                f"the prompt {prompt!r} contains {media}; leave it out, the image or video goes before the prompt"
            )
    count = prompt.count(REGION_PLACEHOLDER)
    if count > 1:
        raise ValueError(
            f"the prompt {prompt!r} has {count} {REGION_PLACEHOLDER} placeholders; a caption is about one region, "
            f"put one {REGION_PLACEHOLDER} where it goes (or none, to have it put in front)"
        )
    return prompt if count else f"{REGION_PLACEHOLDER}\n{prompt}"


def caption_messages(media: np.ndarray | VideoClip, prompt: str, region: dict) -> list[dict]:
    """The chat messages of one caption: the image or video, then the prompt with its `<region>` as `region`."""
    before, after = prompt.split(REGION_PLACEHOLDER)
    kind = "video" if isinstance(media, VideoClip) else "image"
    content = [{"type": kind, kind: media}]
    content += [{"type": "text", "text": before}] if before else []
    content.append({"type": "region", **region})
    content += [{"type": "text", "text": after}] if after else []
    return [{"role": "user", "content": content}]


def _by_media(items: Sequence[CaptionItem]) -> list[list[tuple[int, CaptionItem]]]:
    groups: dict[Hashable, list[tuple[int, CaptionItem]]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.media_key, []).append((index, item))
    return list(groups.values())


def _concat(inputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-sample inputs joined sample after sample (as the model reads region and media inputs)."""
    keys = dict.fromkeys(key for sample in inputs for key in sample)
    return {key: torch.cat([sample[key] for sample in inputs if key in sample]) for key in keys}


def _to(inputs: dict, device: torch.device) -> dict:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in inputs.items()}


def _digest(view: torch.Tensor) -> bytes:
    return hashlib.blake2b(view.numpy().tobytes(), digest_size=16).digest()


def _reason(error: Exception) -> str:
    """The processor's message without its `sample 0, region 0: ` prefix (each sample here is one region)."""
    return SAMPLE_PREFIX.sub("", " ".join(str(error).split()))


__all__ = ["DEFAULT_PROMPT", "STRATEGIES", "CaptionItem", "RegionCaption", "RegionCaptioner", "caption_messages"]
