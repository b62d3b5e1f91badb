"""PixelReferProcessor: chat template, images, `<region>` expansion into object-token placeholders."""

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image
from transformers.utils import logging

from .object_crops import ObjectCrop, context_views, crop_object, crop_object_lite
from .regions import region_to_mask


logger = logging.get_logger(__name__)

IMAGE_TOKEN = "<image>"
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
REGION_PATCH_KEYS = (
    "region_pixel_values",
    "region_grid_thw",
    "region_global_pixel_values",
    "region_global_grid_thw",
    "region_local_pixel_values",
    "region_local_grid_thw",
)


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


def _per_sample(value: Any, batch_size: int, name: str) -> list[list]:
    """Normalises images/regions to one list per sample."""
    if value is None:
        return [[] for _ in range(batch_size)]
    if not isinstance(value, (list, tuple)):
        value = [value]
    if batch_size == 1 and not (len(value) == 1 and isinstance(value[0], (list, tuple))):
        return [list(value)]
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
        **kwargs,
    ):
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
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads a saved processor; the image processor defaults to the PIL backend (`backend="pil"`), whose resize
        matches the original release's pixel values exactly, also where torchvision is installed."""
        kwargs.setdefault("backend", "pil")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def object_crops(self, image: Any, regions: Sequence, sample_index: int = 0) -> list[ObjectCrop]:
        """Scale-adaptive crops of `regions` (any form `region_to_mask` takes) on one image."""
        rgb = _to_rgb_array(image, sample_index)
        crops = []
        for region_index, region in enumerate(regions):
            mask = region_to_mask(region, rgb.shape[:2], sample_index=sample_index, region_index=region_index)
            crop_fn = crop_object_lite if self.object_only else crop_object
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
        return_tensors: str | None = "pt",
        padding_side: str = "left",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: one prompt or a list of prompts (already chat-templated; see `apply_chat_template`).
            images: one image per sample, or one list of images per sample (PIL, uint8 array, path or URL).
            regions: one list of regions per sample, in the order of the `<region>` placeholders. A region of a sample
                with several images names its image with `{"image_index": k, ...}`.
            padding_side: several samples are padded into one batch, on the left by default (for generation).
        Returns:
            `input_ids`, `attention_mask`; for the full model with images `pixel_values`, `image_grid_thw`,
            `image_merge_sizes`; with regions `region_pixel_values`, `region_grid_thw`, `region_masks`,
            `region_mask_hw`, `region_boxes`, `region_image_sizes`.
        """
        if text is None:
            raise ValueError("PixelReferProcessor needs `text` with one <region> per region.")
        texts = [text] if isinstance(text, str) else list(text)
        batch_images = _per_sample(images, len(texts), "images")
        batch_regions = _per_sample(regions, len(texts), "regions")
        rgb_images = [[_to_rgb_array(im, i) for im in ims] for i, ims in enumerate(batch_images)]

        prompts, crops = [], []
        image_features: dict[str, list] = {"pixel_values": [], "image_grid_thw": [], "image_merge_sizes": []}
        region_features: dict[str, list] = {key: [] for key in REGION_PATCH_KEYS}
        view_ids: list[int] = []
        for index, (prompt, sample_images, sample_regions) in enumerate(zip(texts, rgb_images, batch_regions)):
            sample_crops, image_ids = self._sample_crops(index, prompt, sample_images, sample_regions)
            crops.extend(sample_crops)
            for crop in sample_crops:
                prompt = prompt.replace(REGION_PLACEHOLDER, "[" + REGION_TOKEN * crop.num_tokens + "]", 1)
            if sample_crops:
                groups = {"region": [c.image for c in sample_crops]}
                if self.object_only:
                    groups["region_global"], groups["region_local"] = self._context_views(
                        sample_images, sample_crops, image_ids, view_ids
                    )
                for group, group_images in groups.items():
                    # The original divides the pixel budget by the number of regions of the sample, for every group.
                    patches = self._patchify(group_images, budget_divisor=len(sample_crops))
                    region_features[f"{group}_pixel_values"].append(patches["pixel_values"])
                    region_features[f"{group}_grid_thw"].append(patches["image_grid_thw"])
            if self.object_only:
                prompt = prompt.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "")
            else:
                prompt = self._expand_images(index, prompt, sample_images, image_features)
            prompts.append(prompt)

        text_inputs = self.tokenizer(
            prompts, padding=True, padding_side=padding_side, return_tensors="pt", add_special_tokens=False, **kwargs
        )
        data = dict(text_inputs)
        if image_features["pixel_values"]:
            data.update({key: torch.cat(value) for key, value in image_features.items()})
        if crops:
            data.update({key: torch.cat(value) for key, value in region_features.items() if value})
            data.update(self._region_tensors(crops))
            if self.object_only:
                data["region_view_ids"] = torch.tensor(view_ids, dtype=torch.long)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _sample_crops(
        self, index: int, prompt: str, images: list[np.ndarray], regions: list
    ) -> tuple[list[ObjectCrop], list[int]]:
        """The crops of one sample's regions and, for each, the index of its image in the sample."""
        num_placeholders = prompt.count(REGION_PLACEHOLDER)
        if num_placeholders != len(regions):
            raise ValueError(
                f"sample {index}: the text has {num_placeholders} {REGION_PLACEHOLDER} placeholder(s) but "
                f"{len(regions)} region(s) were given; pass exactly one region per {REGION_PLACEHOLDER}, in order."
            )
        if regions and not images:
            raise ValueError(
                f"sample {index}, region 0: regions need an image to point into; pass images=... for this sample."
            )
        crops, image_ids = [], []
        for region_index, region in enumerate(regions):
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
            crops.append(self.object_crops(images[image_index], [region], sample_index=index)[0])
            image_ids.append(image_index)
        return crops, image_ids

    def _context_views(
        self, images: list[np.ndarray], crops: list[ObjectCrop], image_ids: list[int], view_ids: list[int]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Lite's global and local views, one pair per image that has regions (the local view is taken around the
        image's FIRST region, as the original caches it); appends each region's view index to `view_ids`."""
        first_crop: dict[int, ObjectCrop] = {}
        for crop, image_id in zip(crops, image_ids):
            first_crop.setdefault(image_id, crop)
        offset = len(set(view_ids))
        order = list(first_crop)
        view_ids.extend(offset + order.index(image_id) for image_id in image_ids)
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

    def _expand_images(
        self, index: int, prompt: str, images: list[np.ndarray], image_features: dict[str, list]
    ) -> str:
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
        for key in image_features:
            image_features[key].append(patches[key])
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
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = "pt",
        **kwargs,
    ):
        """Renders chat messages; with `tokenize=True` also processes their images and regions.

        Content items: `{"type": "text", "text": ...}`, `{"type": "image", "image": PIL | array | path | url}`
        (also `"path"`/`"url"`), and `{"type": "region", "mask" | "box" | "rle" | "polygon": ...}` (plus
        `"image_index"` when the sample has several images).
        """
        conversations = [conversation] if isinstance(conversation[0], dict) else conversation
        prompts, batch_images, batch_regions = [], [], []
        for conv in conversations:
            rendered, images, regions = self._split_media(conv)
            prompts.append(
                self.tokenizer.apply_chat_template(
                    rendered,
                    chat_template=chat_template or self.chat_template,
                    add_generation_prompt=add_generation_prompt,
                    tokenize=False,
                )
            )
            batch_images.append(images)
            batch_regions.append(regions)
        if not tokenize:
            return prompts[0] if isinstance(conversation[0], dict) else prompts
        out = self(text=prompts, images=batch_images, regions=batch_regions, return_tensors=return_tensors, **kwargs)
        return out if return_dict else out["input_ids"]

    @staticmethod
    def _split_media(conversation: list[dict]) -> tuple[list[dict], list, list]:
        """Messages with media replaced by typed markers, plus the images and regions in order."""
        rendered, images, regions = [], [], []
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
                    elif kind == "region":
                        regions.append({k: v for k, v in item.items() if k != "type"})
                        content.append({"type": "region"})
                    elif kind == "text":
                        content.append(item)
                    else:
                        raise TypeError(
                            f"Unknown content type {kind!r}; use 'text', 'image' or 'region' "
                            f"(region keys: {', '.join(REGION_KEYS)})."
                        )
                message["content"] = content
            rendered.append(message)
        return rendered, images, regions

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens: bool = True, **kwargs):
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return list(
            dict.fromkeys(
                self.tokenizer.model_input_names
                + self.image_processor.model_input_names
                + ["region_pixel_values", "region_grid_thw", "region_masks", "region_mask_hw", "region_boxes",
                   "region_image_sizes"]
            )
        )


__all__ = ["PixelReferProcessor", "CHAT_TEMPLATE"]
