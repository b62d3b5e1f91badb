"""PixelReferProcessor: chat template, images, `<region>` expansion into object-token placeholders."""

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import ProcessingKwargs, TextKwargs, Unpack
from transformers.utils import logging
from transformers.utils.chat_template_utils import render_jinja_template

from ..model_inputs import IMAGE_INPUT_NAMES, REGION_INPUT_NAMES, VIDEO_INPUT_NAMES
from .object_crops import ObjectCrop, PixelReferRegionProcessor, SampleRegions
from .original_release import original_image_processor
from .validation import as_rgb_array
from .video import VideoClip
from .video_regions import video_regions


logger = logging.get_logger(__name__)

IMAGE_TOKEN = "<image>"
VIDEO_PLACEHOLDER = "<video>"
VIDEO_TOKEN = "<|video_pad|>"
REGION_PLACEHOLDER = "<region>"
REGION_TOKEN = "<REGION>"

# The original release's template for images, text and regions; a region item renders as "<region>", which the
# processor then expands into "[" + "<REGION>" * n + "]". Assistant turns (their content and the closing <|im_end|>,
# what the original supervises) are `{% generation %}` blocks, for `return_assistant_tokens_mask=True`.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}"
    "{{- content -}}"
    "{%- else -%}"
    "{%- for item in content -%}"
    "{%- if item['type'] == 'image' -%}"
    "{%- if 'time' in item -%}{{- 'Time ' + item['time'] | round(1) | string + 's: ' -}}{%- endif -%}"
    "{{- '<image>\n' -}}"
    "{%- elif item['type'] == 'video' -%}"
    "{{- '<video>\n' -}}"
    "{%- elif item['type'] == 'region' -%}"
    "{{- '<region>' -}}"
    "{%- elif item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}{{- '\n' -}}"
    "{%- else -%}"
    "{{- render(message['content']) + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
# Private-use characters that mark the assistant spans of a prompt while `<image>` and `<region>` are expanded.
SPAN_START, SPAN_END = "\ue000", "\ue001"

REGION_KEYS = ("mask", "box", "rle", "polygon", "points")


@dataclass
class ProcessedSample:
    """One sample of a batch: its expanded prompt, its image or video inputs, and its regions (None without)."""

    prompt: str
    media: dict[str, torch.Tensor]
    regions: SampleRegions | None


class PixelReferProcessorKwargs(ProcessingKwargs, total=False):
    _defaults = {"text_kwargs": {"padding": True, "add_special_tokens": False}}


# Keywords of a processor call besides the tokenizer's text keywords.
PROCESSOR_KEYWORDS = {"text_kwargs", "return_tensors", "common_kwargs"}


def _with_span_marks(prompt: str, spans: list[tuple[int, int]]) -> str:
    """`prompt` with `SPAN_START` / `SPAN_END` around each `(start, end)` character span."""
    if SPAN_START in prompt or SPAN_END in prompt:
        raise ValueError(
            "The conversation contains the private-use characters U+E000/U+E001, which return_assistant_tokens_mask "
            "uses as markers; remove them from the text."
        )
    pieces, position = [], 0
    for start, end in spans:
        pieces += [prompt[position:start], SPAN_START, prompt[start:end], SPAN_END]
        position = end
    return "".join(pieces) + prompt[position:]


def _without_span_marks(prompt: str) -> tuple[str, list[tuple[int, int]]]:
    """The inverse of `_with_span_marks` (after expansion): the clean prompt and its marked character spans."""
    clean, spans, start = [], [], 0
    for piece in re.split(f"([{SPAN_START}{SPAN_END}])", prompt):
        if piece == SPAN_START:
            start = sum(map(len, clean))
        elif piece == SPAN_END:
            spans.append((start, sum(map(len, clean))))
        else:
            clean.append(piece)
    return "".join(clean), spans


def _assistant_masks(
    offsets: torch.LongTensor, attention_mask: torch.LongTensor, spans: Sequence[list[tuple[int, int]]]
) -> torch.LongTensor:
    """`(B, L)` 1 on the tokens whose first character `offsets[..., 0]` `(B, L, 2)` lies in a span of their sample."""
    masks = torch.zeros_like(attention_mask)
    for row, sample_spans in enumerate(spans):
        for start, end in sample_spans:
            inside = (offsets[row, :, 0] >= start) & (offsets[row, :, 0] < end)
            masks[row] |= (inside & attention_mask[row].bool()).long()
    return masks


def _per_sample(value: Any, batch_size: int, name: str, one_each: bool = False) -> list[list]:
    """Normalises images/regions to one list per sample; with `one_each`, a flat list of `batch_size` items is one
    item per sample (`images=[img0, img1]` for two texts)."""
    if value is None:
        return [[] for _ in range(batch_size)]
    if not isinstance(value, (list, tuple)):
        value = [value]
    if batch_size == 1 and not (len(value) == 1 and isinstance(value[0], (list, tuple))):
        return [list(value)]
    if one_each and len(value) == batch_size and not any(isinstance(v, (list, tuple)) for v in value):
        return [[v] for v in value]
    if len(value) != batch_size or not all(isinstance(v, (list, tuple)) or v is None for v in value):
        raise ValueError(
            f"Got {batch_size} texts but {name} is not one list per sample; pass {name}=[[...], [...]] with one "
            "(possibly empty) list for each text."
        )
    return [list(v) if v is not None else [] for v in value]


class PixelReferProcessor(ProcessorMixin):
    r"""
    Processor of PixelRefer and PixelRefer-Lite: a VideoLLaMA3 image processor and a Qwen2.5 tokenizer, plus the data
    side of the Scale-Adaptive Object Tokenizer.

    Text contains `<image>` for each image and `<region>` for each region. Each `<image>` becomes one `<image>` token
    per vision patch (full model only), each `<region>` becomes `"[" + "<REGION>" * n + "]"` with `n <= mask_num`
    object tokens. Regions are given per sample, in prompt order, as binary masks, boxes, COCO RLE or polygons (see
    [`~pixelrefer_hf.processing.regions.region_to_mask`]).

    Args:
        image_processor ([`VideoLlama3ImageProcessorPil`]): patchifies images and crops.
        tokenizer ([`Qwen2Tokenizer`]): with the `<image>` and `<REGION>` tokens.
        chat_template (`str`, *optional*): defaults to the original release's template.
        mask_num (`int`, *optional*, defaults to 32): maximum object tokens per region.
        object_only (`bool`, *optional*, defaults to `False`): PixelRefer-Lite; no image tokens in the text (`<image>`
            placeholders are dropped), each region gets Lite's crop and global/local context views.
        margin_patches (`int`, *optional*, defaults to 2): crop margin around an object, in patches.
        max_object_patches (`int`, *optional*, defaults to 100): objects covering more patches are shrunk (Lite: 50).
        global_view_size (`int`, *optional*, defaults to 336): side of Lite's whole-image view.
        local_view_size (`int`, *optional*, defaults to 224): side of Lite's object-surroundings view.
        video_fps (`float`, *optional*, defaults to 1.0): frames sampled per second of video (full model), whatever
            the source's own frame rate.
        video_max_frames (`int`, *optional*, defaults to 768): most frames sampled from a video.
        video_merge_size (`int`, *optional*, defaults to 2): video frames are merged `video_merge_size**2` patches
            to one token (full model); their pixel budget is the image budget (`image_processor.size
            ["longest_edge"]`) times `video_merge_size**2`, shared by the sampled frames, as in the original.
        use_token_compression (`bool`, *optional*, defaults to `True`): drop video tokens that barely change from
            the previous frame (full model).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        max_object_tokens: int = 32,
        object_only: bool = False,
        margin_patches: int = 2,
        max_object_patches: int = 100,
        global_view_size: int = 336,
        local_view_size: int = 224,
        video_fps: float = 1.0,
        video_max_frames: int = 768,
        video_merge_size: int = 2,
        use_token_compression: bool = True,
        **kwargs,
    ):
        # Processors saved before the rename (and the original release) call it `mask_num`.
        max_object_tokens = kwargs.pop("mask_num", max_object_tokens)
        self.max_object_tokens = max_object_tokens
        self.object_only = object_only
        self.margin_patches = margin_patches
        self.max_object_patches = max_object_patches
        self.global_view_size = global_view_size
        self.local_view_size = local_view_size
        self.video_fps = video_fps
        self.video_max_frames = video_max_frames
        self.video_merge_size = video_merge_size
        self.use_token_compression = use_token_compression
        self.image_token, self.video_token, self.region_token = IMAGE_TOKEN, VIDEO_TOKEN, REGION_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.region_token_id = tokenizer.convert_tokens_to_ids(REGION_TOKEN)
        if self.region_token_id == tokenizer.unk_token_id or self.region_token_id is None:
            raise ValueError(f"The tokenizer has no {REGION_TOKEN} token; add it with `tokenizer.add_tokens`.")
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE, **kwargs)

    @classmethod
    def from_original_release(
        cls,
        tokenizer,
        *,
        object_only: bool = False,
        max_object_tokens: int = 32,
        use_token_compression: bool = True,
        preprocessor: dict | None = None,
        max_vision_tokens: int = 8192,
        spatial_merge_size: int = 2,
    ) -> "PixelReferProcessor":
        """A processor with the original release's settings for `tokenizer`: its DAMOVL image processor and pixel
        budget (`max_vision_tokens` is the checkpoint's `mm_max_length`; see
        [`~pixelrefer_hf.processing.original_release.original_image_processor`]), the variant's object-shrinking
        threshold (100 patches, Lite 50), and left padding for generation (kept in the saved tokenizer config)."""
        tokenizer.padding_side = "left"
        return cls(
            original_image_processor(preprocessor, max_vision_tokens, spatial_merge_size),
            tokenizer,
            max_object_tokens=max_object_tokens,
            object_only=object_only,
            max_object_patches=50 if object_only else 100,
            use_token_compression=use_token_compression,
            video_merge_size=spatial_merge_size,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a saved processor; the image processor defaults to the PIL backend (`backend="pil"`), whose resize
        matches the original release's pixel values exactly, also where torchvision is installed."""
        kwargs.setdefault("backend", "pil")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def region_processor(self) -> PixelReferRegionProcessor:
        """The region side of this processor (crops, masks, boxes, Lite's context views), with its settings."""
        settings = {field.name: getattr(self, field.name) for field in fields(PixelReferRegionProcessor)}
        return PixelReferRegionProcessor(**settings)

    def object_crops(
        self, image: Any, regions: Sequence, sample_index: int = 0, region_ids: Sequence[int] | None = None
    ) -> list[ObjectCrop]:
        """Scale-adaptive crops of `regions` (any form `region_to_mask` takes) on one image (PIL, array, path)."""
        rgb = as_rgb_array(image, f"sample {sample_index}")
        return self.region_processor.object_crops(rgb, regions, sample_index, region_ids)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        regions: Sequence | None = None,
        videos: Any = None,
        **kwargs: Unpack[PixelReferProcessorKwargs],
    ) -> BatchFeature:
        """
        Args:
            text: one prompt or a list of prompts (already chat-templated; see `apply_chat_template`).
            images: one image per sample, or one list of images per sample (PIL, uint8 array, path or URL).
            regions: one list of regions per sample, in the order of the `<region>` placeholders. A region of a sample
                with several images names its image with `{"image_index": k, ...}`. A region of a video names the
                frame it is drawn on, `{"frame": k, "mask": ...}`, or is a masklet `{"masklet": {k: mask, ...}}`
                (`"frame"` then names the key frame the full model uses; Lite uses every frame); `k` indexes the
                frames of the source video.
            videos: one video per sample (or None for samples without): a path, file object, frame folder,
                `(T, H, W, 3)` uint8 frames or a [`VideoClip`]; sampled at `video_fps` frames per second.
            kwargs: the tokenizer's text keywords (`padding` (default `True`), `padding_side` (default `"left"`,
                what batched generation needs), `truncation`, `max_length`, `pad_to_multiple_of`, ...), directly
                or as `text_kwargs={...}`, and `return_tensors` (default `"pt"`). Truncation may cut text but never a
                media or `<REGION>` placeholder: a prompt that would lose one raises a `ValueError` naming the sample
                and the length it needs. An unknown keyword raises a `TypeError`.
        Returns:
            `input_ids`, `attention_mask`; for the full model with images `pixel_values`, `image_grid_thw`,
            `image_merge_sizes`, with videos `pixel_values_videos`, `video_grid_thw`, `video_merge_sizes`,
            `video_compression_mask`; with regions `region_pixel_values`, `region_grid_thw`, `region_masks`,
            `region_mask_hw`, `region_boxes` (Lite: also `region_context_pixel_values`, `region_context_grid_thw`
            and `region_view_ids`).
        """
        return self._encode(text, images, regions, videos, kwargs)

    def _encode(
        self,
        text: Any,
        images: Any,
        regions: Any,
        videos: Any,
        kwargs: dict,
        return_assistant_tokens_mask: bool = False,
    ) -> BatchFeature:
        """`__call__`; with `return_assistant_tokens_mask`, the texts carry `SPAN_START`/`SPAN_END` around their
        assistant turns, and the output has `assistant_masks` `(batch_size, sequence_length)` (1 on those tokens)."""
        if text is None:
            raise ValueError("PixelReferProcessor needs `text` with one <region> per region.")
        texts = [text] if isinstance(text, str) else list(text)
        text_kwargs = self._text_kwargs(kwargs)
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        batch = zip(
            texts,
            _per_sample(images, len(texts), "images", one_each=True),
            _per_sample(regions, len(texts), "regions"),
            self._videos_per_sample(videos, len(texts)),
        )
        samples = [
            self._process_sample(index, text, images, regions, video)
            for index, (text, images, regions, video) in enumerate(batch)
        ]
        prompts = [sample.prompt for sample in samples]
        if return_assistant_tokens_mask:
            prompts, spans = zip(*(_without_span_marks(prompt) for prompt in prompts))
            text_kwargs["return_offsets_mapping"] = True
        data = dict(self.tokenizer(list(prompts), return_tensors="pt", **text_kwargs))
        if text_kwargs.get("truncation"):
            self._check_truncation(prompts, data["input_ids"], text_kwargs)
        if return_assistant_tokens_mask:
            data["assistant_masks"] = _assistant_masks(data.pop("offset_mapping"), data["attention_mask"], spans)
        for key in (*IMAGE_INPUT_NAMES, *VIDEO_INPUT_NAMES):
            values = [sample.media[key] for sample in samples if key in sample.media]
            if values:
                data[key] = torch.cat(values)
        data.update(PixelReferRegionProcessor.batch([sample.regions for sample in samples]))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _text_kwargs(self, kwargs: dict) -> dict:
        """The tokenizer keywords of a call: PixelRefer's defaults, then the tokenizer's, then the caller's."""
        unknown = set(kwargs) - PROCESSOR_KEYWORDS - set(TextKwargs.__annotations__)
        if unknown:
            raise TypeError(
                f"PixelReferProcessor got unknown keyword(s) {sorted(unknown)}; it takes the tokenizer's text "
                f"keywords ({', '.join(sorted(TextKwargs.__annotations__))}), text_kwargs={{...}} and return_tensors."
            )
        tokenizer_defaults = self.tokenizer.init_kwargs
        text_kwargs = self._merge_kwargs(PixelReferProcessorKwargs, tokenizer_defaults, **kwargs)["text_kwargs"]
        text_kwargs["return_tensors"] = kwargs.get("return_tensors", text_kwargs.get("return_tensors", "pt"))
        # Left padding (what batched generation needs) unless the caller asks otherwise: a saved tokenizer does not
        # keep its `padding_side` attribute, so it cannot be left to the tokenizer.
        text_kwargs["padding_side"] = kwargs.get(
            "padding_side", kwargs.get("text_kwargs", {}).get("padding_side", "left")
        )
        return text_kwargs

    def _check_truncation(self, prompts: list[str], input_ids: torch.Tensor, text_kwargs: dict) -> None:
        """Refuses a truncation that cut a media or `<REGION>` placeholder (the model would miss object tokens)."""
        for index, (prompt, ids) in enumerate(zip(prompts, input_ids)):
            for token, token_id in self._placeholder_tokens():
                expected = prompt.count(token)
                if int((ids == token_id).sum()) != expected:
                    needed = len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                    raise ValueError(
                        f"sample {index}: truncation to max_length={text_kwargs.get('max_length')} cuts {token} "
                        f"placeholders (the sample needs {needed} tokens); pass max_length >= {needed}, fewer or "
                        "smaller regions/images, or truncation=False."
                    )

    def _placeholder_tokens(self) -> list[tuple[str, int]]:
        return [
            (IMAGE_TOKEN, self.image_token_id),
            (VIDEO_TOKEN, self.video_token_id),
            (REGION_TOKEN, self.region_token_id),
        ]

    def _process_sample(self, index: int, text: str, images: list, regions: list, video: Any) -> ProcessedSample:
        """One sample: its regions' crops (and Lite views), its media patches and its expanded prompt."""
        num_placeholders = text.count(REGION_PLACEHOLDER)
        if num_placeholders != len(regions):
            raise ValueError(
                f"sample {index}: the text has {num_placeholders} {REGION_PLACEHOLDER} placeholder(s) but "
                f"{len(regions)} region(s) were given; pass exactly one region per {REGION_PLACEHOLDER}, in order."
            )
        images = [as_rgb_array(image, f"sample {index}") for image in images]
        if video is not None and images:
            raise ValueError(
                f"sample {index}: a sample holds one video or images, not both; split it into two samples."
            )
        if video is not None:
            on_video = video_regions(
                video,
                regions,
                object_only=self.object_only,
                fps=self.video_fps,
                max_frames=self.video_max_frames,
                sample_index=index,
            )
            images, regions, placeholders = on_video.frames, on_video.regions, on_video.placeholders
        else:
            placeholders = [[(i, None)] for i in range(len(regions))]
        region_ids = [region for region, group in enumerate(placeholders) for _ in group]
        sample_regions = self.region_processor(images, regions, index, region_ids)
        prompt = self._expand_regions(text, sample_regions, placeholders)
        if self.object_only:
            for placeholder in (IMAGE_TOKEN, VIDEO_PLACEHOLDER):
                prompt = prompt.replace(placeholder + "\n", "").replace(placeholder, "")
            return ProcessedSample(prompt, {}, sample_regions)
        if video is not None:
            return ProcessedSample(*self._expand_video(index, prompt, on_video.clip), sample_regions)
        return ProcessedSample(*self._expand_images(index, prompt, images), sample_regions)

    @staticmethod
    def _expand_regions(
        prompt: str, regions: SampleRegions | None, placeholders: list[list[tuple[int, float | None]]]
    ) -> str:
        """Each `<region>` -> `"[" + "<REGION>" * n + "]"` (Lite video: one timestamped run per frame)."""
        for group in placeholders:
            pieces = [
                ("" if time is None else f"Time {round(time, 1)}:") + REGION_TOKEN * regions.crops[i].num_tokens
                for i, time in group
            ]
            prompt = prompt.replace(REGION_PLACEHOLDER, "[" + ",".join(pieces) + "]", 1)
        return prompt

    @staticmethod
    def _videos_per_sample(videos: Any, batch_size: int) -> list:
        if videos is None:
            return [None] * batch_size
        if batch_size == 1 and not (isinstance(videos, list) and len(videos) == 1):
            return [videos]
        if not isinstance(videos, list) or len(videos) != batch_size:
            raise ValueError(f"Got {batch_size} texts; pass videos=[...] with one video (or None) for each text.")
        return videos

    def _expand_video(self, index: int, prompt: str, clip: VideoClip) -> tuple[str, dict[str, torch.Tensor]]:
        """The prompt's `<video>` expanded into per-frame timestamps and tokens, and the sampled frames' patches."""
        if prompt.count(VIDEO_PLACEHOLDER) != 1:
            raise ValueError(
                f"sample {index}: the text has {prompt.count(VIDEO_PLACEHOLDER)} {VIDEO_PLACEHOLDER} placeholders "
                f"for one video; put exactly one {VIDEO_PLACEHOLDER} in the text (apply_chat_template does this)."
            )
        merge = self.video_merge_size
        size = dict(self.image_processor.size)
        size["longest_edge"] = size["longest_edge"] * merge**2 // len(clip.frames)
        patches = self.image_processor(images=list(clip.frames), size=size, merge_size=merge, return_tensors="pt")
        grids = patches["image_grid_thw"]
        num_frames, height, width = len(clip.frames), int(grids[0, 1]), int(grids[0, 2])
        keep = self._compression_mask(patches["pixel_values"], num_frames, merge)
        media = {
            "pixel_values_videos": patches["pixel_values"],
            "video_grid_thw": torch.tensor([[num_frames, height, width]]),
            "video_merge_sizes": torch.tensor([merge]),
            "video_compression_mask": keep.flatten(),
        }
        frames_text = ",".join(
            f"Time {round(t, 1)}s:" + VIDEO_TOKEN * int(n) for t, n in zip(clip.timestamps, keep.sum(-1))
        )
        return prompt.replace(VIDEO_PLACEHOLDER, frames_text, 1), media

    def _compression_mask(self, pixel_values: torch.Tensor, num_frames: int, merge: int) -> torch.BoolTensor:
        """`(T, tokens per frame)` True for the video tokens kept: the original drops a merged token whose pixels
        differ from the previous frame's by at most 0.1 grey levels on average; a frame keeps at least its first."""
        tokens = pixel_values.view(num_frames, -1, merge**2 * pixel_values.shape[-1])
        keep = torch.ones(tokens.shape[:2], dtype=torch.bool)
        if self.use_token_compression and num_frames > 1:
            difference = (tokens[1:] - tokens[:-1]).abs().mean(-1) * 255
            keep[1:] = difference > 0.1
            keep[keep.sum(-1) == 0, 0] = True
        return keep

    def _expand_images(self, index: int, prompt: str, images: list[np.ndarray]) -> tuple[str, dict[str, torch.Tensor]]:
        """Each `<image>` expanded into its image's tokens, and the images' patches (the pixel budget shared by the
        sample's images, as in the original)."""
        num_placeholders = prompt.count(IMAGE_TOKEN)
        if num_placeholders != len(images):
            raise ValueError(
                f"sample {index}: the text has {num_placeholders} {IMAGE_TOKEN} placeholder(s) but {len(images)} "
                f"image(s) were given; put one {IMAGE_TOKEN} in the text for each image (apply_chat_template does "
                "this for image items)."
            )
        if not images:
            return prompt, {}
        size = dict(self.image_processor.size)
        size["longest_edge"] = size["longest_edge"] // len(images)
        patches = self.image_processor(images=images, size=size, return_tensors="pt")
        pieces = prompt.split(IMAGE_TOKEN)
        counts = (patches["image_grid_thw"].prod(-1) // patches["image_merge_sizes"] ** 2).tolist()
        prompt = pieces[0] + "".join(IMAGE_TOKEN * n + piece for n, piece in zip(counts, pieces[1:]))
        return prompt, {key: patches[key] for key in IMAGE_INPUT_NAMES}

    def apply_chat_template(
        self,
        conversation: list[dict] | list[list[dict]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_assistant_tokens_mask: bool = False,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """Renders chat messages; with `tokenize=True` also processes their images and regions.

        Content items: `{"type": "text", "text": ...}`, `{"type": "image", "image": PIL | array | path | url}`
        (also `"path"`/`"url"`), `{"type": "video", "video": path | frames | VideoClip}` (at most one per
        conversation), and `{"type": "region", "mask" | "box" | "rle" | "polygon": ...}` (plus `"image_index"` when
        the sample has several images, `"frame"` or `"masklet"` for a video).

        `continue_final_message=True` leaves the last (assistant) message open for the model to continue.
        `return_assistant_tokens_mask=True` (with `tokenize=True, return_dict=True`) adds `assistant_masks`
        `(batch_size, sequence_length)`: 1 on the tokens of the template's `{% generation %}` blocks, i.e. the
        assistant turns' content and closing `<|im_end|>` (what the original release supervises), 0 elsewhere.
        Processor keywords (`return_tensors`, `padding`, `truncation`, `max_length`, ...) go in `processor_kwargs`
        or directly; any other keyword is a variable of the chat template.
        """
        if return_assistant_tokens_mask and not (tokenize and return_dict):
            raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True.")
        processor_kwargs = dict(processor_kwargs or {})
        for key in [key for key in kwargs if key in PROCESSOR_KEYWORDS or key in TextKwargs.__annotations__]:
            processor_kwargs[key] = kwargs.pop(key)
        conversations = [conversation] if isinstance(conversation[0], dict) else conversation
        split = [self._split_media(conv) for conv in conversations]
        prompts, generation_spans = render_jinja_template(
            [rendered for rendered, _, _, _ in split],
            chat_template=chat_template or self.chat_template,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
            **{**self.tokenizer.special_tokens_map, **kwargs},
        )
        if not tokenize:
            return prompts[0] if isinstance(conversation[0], dict) else prompts
        if return_assistant_tokens_mask:
            prompts = [_with_span_marks(prompt, spans) for prompt, spans in zip(prompts, generation_spans)]
        videos = [videos[0] if videos else None for _, _, _, videos in split]
        out = self._encode(
            prompts,
            [images for _, images, _, _ in split],
            [regions for _, _, regions, _ in split],
            videos if any(video is not None for video in videos) else None,
            processor_kwargs,
            return_assistant_tokens_mask=return_assistant_tokens_mask,
        )
        return out if return_dict else out["input_ids"]

    @staticmethod
    def _split_media(conversation: list[dict]) -> tuple[list[dict], list, list, list]:
        """Messages with media replaced by typed markers, plus the images, regions and videos in order."""
        rendered, images, regions, videos = [], [], [], []
        for message in conversation:
            message = copy.copy(message)
            if isinstance(message.get("content"), list):
                content = []
                for item in message["content"]:
                    kind = item.get("type")
                    if kind == "image":
                        source = next((item[k] for k in ("image", "path", "url") if k in item), None)
                        if source is None:
                            raise ValueError('An image item needs "image", "path" or "url".')
                        images.append(source)
                        content.append({"type": "image", **({"time": item["time"]} if "time" in item else {})})
                    elif kind == "video":
                        source = next((item[k] for k in ("video", "path", "url") if k in item), None)
                        if source is None:
                            raise ValueError('A video item needs "video" (a path, frames or VideoClip) or "path".')
                        if videos:
                            raise ValueError(
                                "A conversation holds at most one video; split the others into their own samples."
                            )
                        videos.append(source)
                        content.append({"type": "video"})
                    elif kind == "region":
                        regions.append({k: v for k, v in item.items() if k != "type"})
                        content.append({"type": "region"})
                    elif kind == "text":
                        content.append(item)
                    else:
                        raise TypeError(
                            f"Unknown content type {kind!r}; use 'text', 'image', 'video' or 'region' "
                            f"(region keys: {', '.join(REGION_KEYS)})."
                        )
                message["content"] = content
            rendered.append(message)
        return rendered, images, regions, videos

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        names = self.tokenizer.model_input_names + self.image_processor.model_input_names
        return list(dict.fromkeys([*names, *VIDEO_INPUT_NAMES, *REGION_INPUT_NAMES]))


__all__ = ["PixelReferProcessor", "CHAT_TEMPLATE"]
