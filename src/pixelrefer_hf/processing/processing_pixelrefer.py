"""PixelReferProcessor: chat template, images, `<region>` expansion into object-token placeholders."""

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image
from transformers.processing_utils import ProcessingKwargs, TextKwargs, Unpack
from transformers.utils import logging

from .object_crops import ObjectCrop, context_views, crop_object, crop_object_lite
from .original_release import original_image_processor
from .regions import region_to_mask
from .video import VideoClip, load_video


logger = logging.get_logger(__name__)

IMAGE_TOKEN = "<image>"
VIDEO_PLACEHOLDER = "<video>"
VIDEO_TOKEN = "<|video_pad|>"
REGION_PLACEHOLDER = "<region>"
REGION_TOKEN = "<REGION>"

# The original release's template for images, text and regions; a region item renders as "<region>", which the
# processor then expands into "[" + "<REGION>" * n + "]".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for content in message['content'] -%}"
    "{%- if content['type'] == 'image' -%}"
    "{%- if 'time' in content -%}{{- 'Time ' + content['time'] | round(1) | string + 's: ' -}}{%- endif -%}"
    "{{- '<image>\n' -}}"
    "{%- elif content['type'] == 'video' -%}"
    "{{- '<video>\n' -}}"
    "{%- elif content['type'] == 'region' -%}"
    "{{- '<region>' -}}"
    "{%- elif content['type'] == 'text' -%}"
    "{{- content['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

REGION_KEYS = ("mask", "box", "rle", "polygon", "points")
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_merge_sizes")
VIDEO_KEYS = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")
REGION_PATCH_KEYS = (
    "region_pixel_values",
    "region_grid_thw",
    "region_global_pixel_values",
    "region_global_grid_thw",
    "region_local_pixel_values",
    "region_local_grid_thw",
)
# What the processor gives for regions (documented in `PixelReferModel.forward`).
REGION_KEYS_OUT = (
    *REGION_PATCH_KEYS[:2],
    "region_masks",
    "region_mask_hw",
    "region_boxes",
    "region_image_sizes",
    *REGION_PATCH_KEYS[2:],
    "region_view_ids",
)


class PixelReferProcessorKwargs(ProcessingKwargs, total=False):
    _defaults = {"text_kwargs": {"padding": True, "add_special_tokens": False}}


# Keywords of a processor call besides the tokenizer's text keywords.
PROCESSOR_KEYWORDS = {"text_kwargs", "return_tensors", "common_kwargs"}


def _to_rgb_array(image: Any, sample_index: int) -> np.ndarray:
    """PIL image, `(H, W, 3)` array / tensor, path or URL -> `(H, W, 3)` uint8 RGB."""
    if isinstance(image, str):
        image = load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
        if image.dtype != np.uint8:
            raise TypeError(
                f"sample {sample_index}: image arrays must be uint8 (H, W, 3) RGB, got dtype {image.dtype}; "
                "convert with `np.asarray(img, dtype=np.uint8)` or pass a PIL image."
            )
        return image
    raise TypeError(
        f"sample {sample_index}: unsupported image {type(image).__name__}"
        f"{getattr(image, 'shape', '')}; pass a PIL image, a path, or a uint8 (H, W, 3) RGB array."
    )


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
        video_fps (`float`, *optional*, defaults to 1.0): frames sampled per second of video (full model).
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
        mask_num: int = 32,
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
        self.video_fps = video_fps
        self.video_max_frames = video_max_frames
        self.video_merge_size = video_merge_size
        self.use_token_compression = use_token_compression
        self.video_token = VIDEO_TOKEN
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)
        self.global_view_size = global_view_size
        self.local_view_size = local_view_size
        self.mask_num = mask_num
        self.object_only = object_only
        self.margin_patches = margin_patches
        self.max_object_patches = max_object_patches
        self.image_token = IMAGE_TOKEN
        self.region_token = REGION_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
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
        mask_num: int = 32,
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
            mask_num=mask_num,
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

    def object_crops(
        self, image: Any, regions: Sequence, sample_index: int = 0, region_ids: Sequence[int] | None = None
    ) -> list[ObjectCrop]:
        """Scale-adaptive crops of `regions` (any form `region_to_mask` takes) on one image.

        `region_ids` are the regions' indices in the sample, for error messages (default: their positions).
        """
        rgb = _to_rgb_array(image, sample_index)
        crop_fn = crop_object_lite if self.object_only else crop_object
        crops = []
        for region_index, region in zip(region_ids or range(len(regions)), regions):
            mask = region_to_mask(region, rgb.shape[:2], sample_index=sample_index, region_index=region_index)
            crop = crop_fn(
                rgb, mask, self.mask_num, self.image_processor.patch_size, self.margin_patches, self.max_object_patches
            )
            if crop.num_tokens == 0:
                raise ValueError(
                    f"sample {sample_index}, region {region_index}: the mask vanishes on the crop's patch grid; "
                    "pass a mask that covers at least one pixel more."
                )
            crops.append(crop)
        return crops

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
            kwargs: the tokenizer's text keywords (`padding` (default `True`), `padding_side` (default the
                tokenizer's, left for generation), `truncation`, `max_length`, `pad_to_multiple_of`, ...), directly
                or as `text_kwargs={...}`, and `return_tensors` (default `"pt"`). Truncation may cut text but never a
                media or `<REGION>` placeholder: a prompt that would lose one raises a `ValueError` naming the sample
                and the length it needs. An unknown keyword raises a `TypeError`.
        Returns:
            `input_ids`, `attention_mask`; for the full model with images `pixel_values`, `image_grid_thw`,
            `image_merge_sizes`, with videos `pixel_values_videos`, `video_grid_thw`, `video_merge_sizes`,
            `video_compression_mask`; with regions `region_pixel_values`, `region_grid_thw`, `region_masks`,
            `region_mask_hw`, `region_boxes`, `region_image_sizes` (Lite: also the `region_global_*`,
            `region_local_*` context views and `region_view_ids`).
        """
        if text is None:
            raise ValueError("PixelReferProcessor needs `text` with one <region> per region.")
        texts = [text] if isinstance(text, str) else list(text)
        batch_images = _per_sample(images, len(texts), "images", one_each=True)
        batch_regions = _per_sample(regions, len(texts), "regions")
        batch_videos = self._videos_per_sample(videos, len(texts))
        rgb_images = [[_to_rgb_array(im, i) for im in ims] for i, ims in enumerate(batch_images)]

        prompts, crops, view_ids = [], [], []
        features: dict[str, list] = {key: [] for key in (*IMAGE_KEYS, *VIDEO_KEYS, *REGION_PATCH_KEYS)}
        for index, sample in enumerate(zip(texts, rgb_images, batch_regions, batch_videos)):
            prompt, sample_crops = self._process_sample(index, *sample, features, view_ids)
            prompts.append(prompt)
            crops.extend(sample_crops)

        text_kwargs = self._text_kwargs(kwargs)
        return_tensors = text_kwargs.pop("return_tensors", "pt")
        text_inputs = self.tokenizer(prompts, return_tensors="pt", **text_kwargs)
        if text_kwargs.get("truncation"):
            self._check_truncation(prompts, text_inputs["input_ids"], text_kwargs)
        data = dict(text_inputs)
        data.update({key: torch.cat(value) for key, value in features.items() if value})
        if crops:
            data.update(self._region_tensors(crops))
            if self.object_only:
                data["region_view_ids"] = torch.tensor(view_ids, dtype=torch.long)
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

    def _process_sample(
        self,
        index: int,
        prompt: str,
        sample_images: list[np.ndarray],
        sample_regions: list,
        video: Any,
        features: dict[str, list],
        view_ids: list[int],
    ) -> tuple[str, list[ObjectCrop]]:
        """One sample: its crops (and Lite views), media patches appended to `features`, and its expanded prompt."""
        num_placeholders = prompt.count(REGION_PLACEHOLDER)
        if num_placeholders != len(sample_regions):
            raise ValueError(
                f"sample {index}: the text has {num_placeholders} {REGION_PLACEHOLDER} placeholder(s) but "
                f"{len(sample_regions)} region(s) were given; pass exactly one region per {REGION_PLACEHOLDER}, "
                "in order."
            )
        clip = None
        if video is not None:
            if sample_images:
                raise ValueError(
                    f"sample {index}: a sample holds one video or images, not both; split it into two samples."
                )
            clip, sample_images, sample_regions, groups = self._video_regions(index, video, sample_regions)
        else:
            groups = [[(i, None)] for i in range(len(sample_regions))]
        region_ids = [region for region, group in enumerate(groups) for _ in group]
        sample_crops, image_ids = self._sample_crops(index, sample_images, sample_regions, region_ids)
        for group in groups:
            pieces = [
                ("" if time is None else f"Time {round(time, 1)}:") + REGION_TOKEN * sample_crops[i].num_tokens
                for i, time in group
            ]
            prompt = prompt.replace(REGION_PLACEHOLDER, "[" + ",".join(pieces) + "]", 1)
        if sample_crops:
            patch_groups = {"region": [c.image for c in sample_crops]}
            if self.object_only:
                patch_groups["region_global"], patch_groups["region_local"] = self._context_views(
                    sample_images, sample_crops, image_ids, view_ids
                )
            for group, group_images in patch_groups.items():
                # The original divides the pixel budget by the number of regions of the sample, for every group.
                patches = self._patchify(group_images, budget_divisor=len(sample_crops))
                features[f"{group}_pixel_values"].append(patches["pixel_values"])
                features[f"{group}_grid_thw"].append(patches["image_grid_thw"])
        if self.object_only:
            for placeholder in (IMAGE_TOKEN, VIDEO_PLACEHOLDER):
                prompt = prompt.replace(placeholder + "\n", "").replace(placeholder, "")
        elif clip is not None:
            prompt = self._expand_video(index, prompt, clip, features)
        else:
            prompt = self._expand_images(index, prompt, sample_images, features)
        return prompt, sample_crops

    @staticmethod
    def _videos_per_sample(videos: Any, batch_size: int) -> list:
        if videos is None:
            return [None] * batch_size
        if batch_size == 1 and not (isinstance(videos, list) and len(videos) == 1):
            return [videos]
        if not isinstance(videos, list) or len(videos) != batch_size:
            raise ValueError(f"Got {batch_size} texts; pass videos=[...] with one video (or None) for each text.")
        return videos

    def _video_regions(
        self, index: int, video: Any, regions: list
    ) -> tuple[VideoClip, list[np.ndarray], list[dict], list[list[tuple[int, float | None]]]]:
        """Loads a sample's video and turns its regions into per-frame regions.

        The full model takes one frame per object (the frame the object is drawn on; the first one of a masklet);
        Lite takes every annotated frame of a masklet and writes each frame's timestamp into the prompt. Returns the
        clip, the frames the regions are on, one region per (object, frame) with its `image_index`, and for each
        object the (region, timestamp) pairs of its `<region>` placeholder.
        """
        masklets, key_frames = [], []
        for region_index, region in enumerate(regions):
            masklet, key_frame = self._masklet(index, region_index, region)
            masklets.append(masklet)
            key_frames.append(key_frame)
        if not self.object_only:
            for region_index, (masklet, key_frame) in enumerate(zip(masklets, key_frames)):
                if key_frame is None and len(masklet) > 1:
                    logger.warning(
                        "sample %d, region %d: the full model takes one frame per object; using the masklet's first "
                        "frame %d (name another with {'masklet': ..., 'frame': k}).",
                        index,
                        region_index,
                        min(masklet),
                    )
            masklets = [{k: m[k]} for m, k in ((m, min(m) if k is None else k) for m, k in zip(masklets, key_frames))]
        annotated = sorted({frame for masklet in masklets for frame in masklet})
        clip = self._load_clip(index, video, annotated)
        try:
            frames = [clip.frame(frame) for frame in annotated]
        except KeyError as error:
            raise ValueError(
                f"sample {index}: regions are drawn on frames {annotated}, but {error.args[0]}; pass masks for the "
                "sampled frames, or the video itself so that the processor can decode those frames."
            ) from None
        flat, groups = [], []
        for masklet in masklets:
            group = []
            for frame in sorted(masklet):
                group.append((len(flat), frame / clip.fps if self.object_only else None))
                flat.append(self._with_image_index(masklet[frame], annotated.index(frame)))
            groups.append(group)
        return clip, frames, flat, groups

    @staticmethod
    def _masklet(index: int, region_index: int, region: Any) -> tuple[dict[int, Any], int | None]:
        """A video region as {source frame index: region form}, and its key frame (the one the full model uses)."""
        if isinstance(region, dict) and "masklet" in region:
            masklet = region["masklet"]
            if not isinstance(masklet, dict) or not masklet:
                raise ValueError(
                    f"sample {index}, region {region_index}: a masklet is a non-empty dict "
                    "{frame_index: mask | {'box': ...} | ...}."
                )
            masklet = {int(frame): form for frame, form in masklet.items()}
            key_frame = region.get("frame")
            if key_frame is not None and int(key_frame) not in masklet:
                raise ValueError(
                    f"sample {index}, region {region_index}: key frame {key_frame} is not one of the masklet's "
                    f"frames {sorted(masklet)}; name one of them."
                )
            return masklet, None if key_frame is None else int(key_frame)
        if isinstance(region, dict) and "frame" in region:
            return {int(region["frame"]): {k: v for k, v in region.items() if k != "frame"}}, int(region["frame"])
        raise ValueError(
            f"sample {index}, region {region_index}: a region of a video must say which frame it is drawn on, "
            '{"frame": k, "mask": ...}, or be a masklet {"masklet": {k: mask, ...}} (k: frame of the source video).'
        )

    @staticmethod
    def _with_image_index(form: Any, image_index: int) -> dict:
        if isinstance(form, dict):
            return {**{k: v for k, v in form.items() if k != "type"}, "image_index": image_index}
        return {"mask": form, "image_index": image_index}

    def _load_clip(self, index: int, video: Any, annotated: list[int]) -> VideoClip:
        if isinstance(video, VideoClip):
            return video
        try:
            if self.object_only:
                return load_video(video, frame_indices=annotated)
            return load_video(video, fps=self.video_fps, max_frames=self.video_max_frames, extra_frames=annotated)
        except ValueError as error:
            raise ValueError(f"sample {index}: {error}") from error

    def _expand_video(self, index: int, prompt: str, clip: VideoClip, features: dict[str, list]) -> str:
        """Patches of the sampled frames and the prompt's `<video>` expanded into per-frame timestamps and tokens."""
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
        features["pixel_values_videos"].append(patches["pixel_values"])
        features["video_grid_thw"].append(torch.tensor([[num_frames, height, width]]))
        features["video_merge_sizes"].append(torch.tensor([merge]))
        features["video_compression_mask"].append(keep.flatten())
        frames_text = ",".join(
            f"Time {round(t, 1)}s:" + VIDEO_TOKEN * int(n) for t, n in zip(clip.timestamps, keep.sum(-1))
        )
        return prompt.replace(VIDEO_PLACEHOLDER, frames_text, 1)

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

    def _sample_crops(
        self, index: int, images: list[np.ndarray], regions: list, region_ids: list[int]
    ) -> tuple[list[ObjectCrop], list[int]]:
        """The crops of one sample's regions and, for each, the index of its image in the sample.

        `region_ids` maps each region to the `<region>` it belongs to (for error messages; a Lite masklet has one
        region per frame).
        """
        if regions and not images:
            raise ValueError(
                f"sample {index}, region 0: regions need an image to point into; pass images=... for this sample."
            )
        crops, image_ids = [], []
        for region_index, region in zip(region_ids, regions):
            image_index = 0
            if isinstance(region, dict) and "image_index" in region:
                region = dict(region)
                image_index = region.pop("image_index")
                if not 0 <= image_index < len(images):
                    raise ValueError(
                        f"sample {index}, region {region_index}: image_index {image_index} but the sample has "
                        f"{len(images)} image(s); pass an index in [0, {len(images) - 1}]."
                    )
            elif len(images) > 1:
                raise ValueError(
                    f"sample {index}, region {region_index}: the sample has {len(images)} images; say which one the "
                    'region is on with {"image_index": k, "mask": ...}.'
                )
            crops.extend(self.object_crops(images[image_index], [region], index, region_ids=[region_index]))
            image_ids.append(image_index)
        return crops, image_ids

    def _context_views(
        self, images: list[np.ndarray], crops: list[ObjectCrop], image_ids: list[int], view_ids: list[int]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Lite's global and local views, one pair per image that has regions (the local view is taken around the
        image's FIRST region, as the original caches it); appends each region's view index IN ITS SAMPLE to
        `view_ids` (local indices stay right when samples are split or joined along the batch)."""
        first_crop: dict[int, ObjectCrop] = {}
        for crop, image_id in zip(crops, image_ids):
            first_crop.setdefault(image_id, crop)
        order = list(first_crop)
        view_ids.extend(order.index(image_id) for image_id in image_ids)
        views = [
            context_views(images[i], first_crop[i].box, self.global_view_size, self.local_view_size) for i in order
        ]
        return [whole for whole, _ in views], [local for _, local in views]

    def _patchify(self, images: list[np.ndarray], budget_divisor: int | None = None) -> BatchFeature:
        """Patches of images of one sample; the pixel budget is divided by `budget_divisor` (default: the number of
        images), as in the original."""
        size = dict(self.image_processor.size)
        size["longest_edge"] = size["longest_edge"] // (budget_divisor or len(images))
        return self.image_processor(images=images, size=size, return_tensors="pt")

    def _expand_images(self, index: int, prompt: str, images: list[np.ndarray], features: dict[str, list]) -> str:
        num_placeholders = prompt.count(IMAGE_TOKEN)
        if num_placeholders != len(images):
            raise ValueError(
                f"sample {index}: the text has {num_placeholders} {IMAGE_TOKEN} placeholder(s) but {len(images)} "
                f"image(s) were given; put one {IMAGE_TOKEN} in the text for each image (apply_chat_template does "
                "this for image items)."
            )
        if not images:
            return prompt
        patches = self._patchify(images)
        for key in IMAGE_KEYS:
            features[key].append(patches[key])
        merge = patches["image_merge_sizes"] ** 2
        pieces = prompt.split(IMAGE_TOKEN)
        counts = (patches["image_grid_thw"].prod(-1) // merge).tolist()
        return pieces[0] + "".join(IMAGE_TOKEN * n + piece for n, piece in zip(counts, pieces[1:]))

    @staticmethod
    def _region_tensors(crops: list[ObjectCrop]) -> dict[str, torch.Tensor]:
        return {
            "region_masks": torch.cat([torch.from_numpy(c.mask).float().flatten() for c in crops]),
            "region_mask_hw": torch.tensor([c.mask.shape for c in crops], dtype=torch.long),
            "region_boxes": torch.tensor([c.box for c in crops], dtype=torch.long),
            "region_image_sizes": torch.tensor([c.image_size for c in crops], dtype=torch.long),
        }

    def apply_chat_template(
        self,
        conversation: list[dict] | list[list[dict]],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """Renders chat messages; with `tokenize=True` also processes their images and regions.

        Content items: `{"type": "text", "text": ...}`, `{"type": "image", "image": PIL | array | path | url}`
        (also `"path"`/`"url"`), `{"type": "video", "video": path | frames | VideoClip}` (at most one per
        conversation), and `{"type": "region", "mask" | "box" | "rle" | "polygon": ...}` (plus `"image_index"` when
        the sample has several images, `"frame"` or `"masklet"` for a video).

        `continue_final_message=True` leaves the last (assistant) message open for the model to continue.
        Processor keywords (`return_tensors`, `padding`, `truncation`, `max_length`, ...) go in `processor_kwargs`
        or directly; any other keyword is a variable of the chat template.
        """
        processor_kwargs = dict(processor_kwargs or {})
        for key in [key for key in kwargs if key in PROCESSOR_KEYWORDS or key in TextKwargs.__annotations__]:
            processor_kwargs[key] = kwargs.pop(key)
        conversations = [conversation] if isinstance(conversation[0], dict) else conversation
        prompts, batch_images, batch_regions, batch_videos = [], [], [], []
        for conv in conversations:
            rendered, images, regions, videos = self._split_media(conv)
            if len(videos) > 1:
                raise ValueError("A conversation holds at most one video; split the others into their own samples.")
            batch_videos.append(videos[0] if videos else None)
            prompts.append(
                self.tokenizer.apply_chat_template(
                    rendered,
                    chat_template=chat_template or self.chat_template,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=continue_final_message,
                    tokenize=False,
                    **kwargs,
                )
            )
            batch_images.append(images)
            batch_regions.append(regions)
        if not tokenize:
            return prompts[0] if isinstance(conversation[0], dict) else prompts
        videos = batch_videos if any(v is not None for v in batch_videos) else None
        out = self(text=prompts, images=batch_images, regions=batch_regions, videos=videos, **processor_kwargs)
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
        return list(dict.fromkeys([*names, *VIDEO_KEYS, *REGION_KEYS_OUT]))


__all__ = ["PixelReferProcessor", "CHAT_TEMPLATE"]
