"""SAOT, data side: crop each object with a margin, rescale the crop to its object's size, mask on the patch grid.

Small objects are enlarged so that their mask covers at least `max_tokens` patch cells; huge objects are shrunk so
that they cover about `max_object_patches` cells. The crop is resized with OpenCV exactly as the original release
does (its rounding is what the checkpoints were trained on). The full model and Lite were trained with slightly
different crops (`crop_object` and `crop_object_lite`); Lite also sees two context views of the source image
(`context_views`).

[`PixelReferRegionProcessor`] is the region counterpart of the image processor, the component the processor uses:
it turns the regions of one sample into [`SampleRegions`] (crops, patches, and for Lite each image's context views),
and [`PixelReferRegionProcessor.batch`] joins the samples of a batch into the model's region inputs.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
from torch.nn import functional as F
from transformers import BatchFeature

from . import validation
from .regions import region_to_mask


@dataclass
class ObjectCrop:
    """One region, ready for the vision encoder.

    image: `(h * patch, w * patch, 3)` uint8 crop, scale-adapted.
    mask: `(h, w)` the object's mask on the crop's patch grid (uint8 {0, 1} for the full model, float in [0, 1] for
        Lite).
    num_tokens: object tokens this region becomes (`<REGION>` placeholders in the prompt).
    box: (x0, y0, x1, y1) of the crop in the source image, inclusive pixels.
    image_size: (height, width) of the source image.
    scale: factor the crop was resized by.
    """

    image: np.ndarray
    mask: np.ndarray
    num_tokens: int
    box: tuple[int, int, int, int]
    image_size: tuple[int, int]
    scale: float


def scale_factor(mask_area: int, max_tokens: int, patch_size: int, max_object_patches: int) -> float:
    """Resize factor of a crop: enlarge until the mask covers `max_tokens` cells, shrink above `max_object_patches`."""
    cell = patch_size * patch_size
    scale = math.ceil(math.sqrt(cell * max_tokens / mask_area))
    if scale == 1 and mask_area / cell > max_object_patches:
        scale = 1 / math.sqrt(mask_area / cell / max_object_patches)
    return scale


def crop_object(
    image: np.ndarray,
    mask: np.ndarray,
    max_tokens: int = 32,
    patch_size: int = 14,
    margin_patches: int = 2,
    max_object_patches: int = 100,
) -> ObjectCrop:
    """Scale-adaptive crop of one object (full PixelRefer).

    Args:
        image: `(H, W, 3)` uint8 RGB.
        mask: `(H, W)` uint8 {0, 1}, at least one pixel set.
        max_tokens: the model's `mask_num`.
    """
    height, width = mask.shape
    rows, cols = np.nonzero(mask)
    margin = patch_size * margin_patches
    top, left = max(0, int(rows.min()) - margin), max(0, int(cols.min()) - margin)
    bottom, right = min(height - 1, int(rows.max()) + margin), min(width - 1, int(cols.max()) + margin)
    if bottom <= top or right <= left:
        raise ValueError(
            f"Cannot crop a region from a {height}x{width} image: the crop box would be empty. "
            "Pass an image of at least 2x2 pixels."
        )
    scale = scale_factor(int(mask.sum()), max_tokens, patch_size, max_object_patches)
    # The original crops with an exclusive bottom/right edge while its box is inclusive; kept for parity.
    crop_h, crop_w = bottom - top, right - left
    out_h = math.ceil(crop_h * scale / patch_size) * patch_size
    out_w = math.ceil(crop_w * scale / patch_size) * patch_size
    crop = cv2.resize(np.ascontiguousarray(image[top:bottom, left:right]), (out_w, out_h))
    mask_crop = torch.from_numpy(np.ascontiguousarray(mask[top:bottom, left:right], dtype=np.uint8))
    grid_mask = F.interpolate(
        mask_crop[None, None], size=(out_h // patch_size, out_w // patch_size), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    return ObjectCrop(
        image=crop,
        mask=grid_mask,
        num_tokens=min(max_tokens, int(grid_mask.sum())),
        box=(left, top, right, bottom),
        image_size=(height, width),
        scale=float(scale),
    )


def crop_object_lite(
    image: np.ndarray,
    mask: np.ndarray,
    max_tokens: int = 32,
    patch_size: int = 14,
    margin_patches: int = 2,
    max_object_patches: int = 50,
) -> ObjectCrop:
    """Scale-adaptive crop of one object (PixelRefer-Lite).

    Differs from `crop_object` as the Lite release does: the crop includes the box's bottom row and right column,
    shrinking starts above 50 patches, the crop is resized with `INTER_AREA` when it shrinks on both sides, the mask
    is resized to the patch grid as floats (fractional cells count as object), and every region becomes exactly
    `max_tokens` tokens (zero padded).
    """
    height, width = mask.shape
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    x, y, box_w, box_h = cv2.boundingRect(cv2.findNonZero(mask))
    margin = patch_size * margin_patches
    top, left = max(0, y - margin), max(0, x - margin)
    bottom, right = min(height, y + box_h + margin), min(width, x + box_w + margin)
    crop_h, crop_w = bottom - top, right - left
    scale = scale_factor(int(mask.sum(dtype=np.int64)), max_tokens, patch_size, max_object_patches)
    out_h = math.ceil(crop_h * scale / patch_size) * patch_size
    out_w = math.ceil(crop_w * scale / patch_size) * patch_size
    interpolation = cv2.INTER_LINEAR if (out_h >= crop_h or out_w >= crop_w) else cv2.INTER_AREA
    crop = cv2.resize(np.ascontiguousarray(image[top:bottom, left:right]), (out_w, out_h), interpolation=interpolation)
    grid_mask = cv2.resize(
        mask[top:bottom, left:right].astype(np.float32),
        (out_w // patch_size, out_h // patch_size),
        interpolation=cv2.INTER_LINEAR,
    )
    return ObjectCrop(
        image=crop,
        mask=grid_mask,
        num_tokens=max_tokens,
        box=(left, top, right - 1, bottom - 1),
        image_size=(height, width),
        scale=float(scale),
    )


def context_views(
    image: np.ndarray, box: tuple[int, int, int, int], global_size: int = 336, local_size: int = 224
) -> tuple[np.ndarray, np.ndarray]:
    """Lite's context of an object: the whole image squashed to `global_size`, and the object's crop (inclusive
    `box`, before scale adaptation) squashed to `local_size`, both with `INTER_AREA`."""
    x0, y0, x1, y1 = box
    whole = cv2.resize(image, (global_size, global_size), interpolation=cv2.INTER_AREA)
    local = cv2.resize(
        np.ascontiguousarray(image[y0 : y1 + 1, x0 : x1 + 1]), (local_size, local_size), interpolation=cv2.INTER_AREA
    )
    return whole, local


def position_boxes(crops: list[ObjectCrop]) -> torch.Tensor:
    """`(R, 4)` float32 boxes of the crops as the box position embedding was trained to read them.

    The original passes its crop box as (top, left, bottom, right) to a function that reads it as (x0, y0, x1, y1)
    and normalises by (width - 1, height - 1). So the first position channel, which runs over a crop's columns,
    goes from top / (W - 1) to bottom / (W - 1), and the second, over its rows, from left / (H - 1) to right / (H - 1).
    The trained embedding expects exactly that, so it is reproduced here.
    """
    x0, y0, x1, y1 = torch.tensor([crop.box for crop in crops], dtype=torch.float32).unbind(-1)
    height, width = (torch.tensor([crop.image_size for crop in crops], dtype=torch.float32) - 1).unbind(-1)
    return torch.stack([y0 / width, x0 / height, y1 / width, x1 / height], dim=-1)


@dataclass
class SampleRegions:
    """The regions of one sample, ready for the model.

    crops: one crop per region, in `<region>` order (Lite: one per frame of a masklet).
    pixel_values, grid_thw: patches `(sum(h_i * w_i), 3 * patch**2)` and grids `(R, 3)` of the crops.
    context_pixel_values, context_grid_thw: Lite only, the global then the local view of each image with regions.
    view_ids: Lite only, each region's context image among this sample's context images.
    """

    crops: list[ObjectCrop]
    pixel_values: torch.Tensor
    grid_thw: torch.LongTensor
    context_pixel_values: torch.Tensor | None = None
    context_grid_thw: torch.LongTensor | None = None
    view_ids: list[int] = field(default_factory=list)


@dataclass
class PixelReferRegionProcessor:
    """Scale-adaptive crops of regions and their patches (the data side of the Scale-Adaptive Object Tokenizer).

    Args:
        image_processor: the processor's VideoLLaMA3 image processor, which patchifies crops and views.
        max_object_tokens: the model's maximum object tokens per region.
        object_only: PixelRefer-Lite's crops, and a global and a local context view per image with regions.
        margin_patches, max_object_patches, global_view_size, local_view_size: as in [`PixelReferProcessor`].
    """

    image_processor: Any
    max_object_tokens: int = 32
    object_only: bool = False
    margin_patches: int = 2
    max_object_patches: int = 100
    global_view_size: int = 336
    local_view_size: int = 224

    def object_crops(
        self, image: np.ndarray, regions: Sequence, sample_index: int = 0, region_ids: Sequence[int] | None = None
    ) -> list[ObjectCrop]:
        """Scale-adaptive crops of `regions` (any form `region_to_mask` takes) on one `(H, W, 3)` uint8 image.

        `region_ids` are the regions' indices in the sample, for error messages (default: their positions).
        """
        crop_fn = crop_object_lite if self.object_only else crop_object
        patch_size = self.image_processor.patch_size
        crops = []
        for region_index, region in zip(region_ids or range(len(regions)), regions):
            where = f"sample {sample_index}, region {region_index}"
            if min(image.shape[:2]) < 2:
                raise ValueError(
                    f"{where}: the image is {image.shape[1]} x {image.shape[0]} pixels; regions need an image of at "
                    "least 2 x 2 pixels"
                )
            mask = region_to_mask(region, image.shape[:2], sample_index=sample_index, region_index=region_index)
            try:
                crop = crop_fn(
                    image, mask, self.max_object_tokens, patch_size, self.margin_patches, self.max_object_patches
                )
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
            if crop.num_tokens == 0 or not crop.mask.any():
                raise ValueError(
                    f"{where}: the mask vanishes on the crop's patch grid; pass a mask that covers at least one "
                    "pixel more."
                )
            crops.append(crop)
        return crops

    def __call__(
        self, images: list[np.ndarray], regions: list, sample_index: int = 0, region_ids: Sequence[int] | None = None
    ) -> SampleRegions | None:
        """The regions of one sample on its `images` (None without regions).

        A region of a sample with several images names its image with `{"image_index": k, ...}`; `region_ids` maps
        each region to the `<region>` it belongs to, for error messages (a Lite masklet has one region per frame).
        """
        if not regions:
            return None
        if not images:
            raise ValueError(
                f"sample {sample_index}, region 0: regions need an image to point into; pass images=... for this "
                "sample."
            )
        region_ids = list(region_ids or range(len(regions)))
        validation.region_count(len(set(region_ids)), f"sample {sample_index}")
        image_ids = [self._image_index(region, len(images), sample_index, i) for i, region in zip(region_ids, regions)]
        crops = [
            crop
            for region, image_id, region_id in zip(regions, image_ids, region_ids)
            for crop in self.object_crops(images[image_id], [_without_image_index(region)], sample_index, [region_id])
        ]
        # The original divides the pixel budget by the number of regions of the sample, for crops and views alike.
        patches = self._patchify([crop.image for crop in crops], len(crops))
        sample = SampleRegions(crops, patches["pixel_values"], patches["image_grid_thw"])
        if self.object_only:
            views, sample.view_ids = self._context_views(images, crops, image_ids)
            context = self._patchify(views, len(crops))
            sample.context_pixel_values, sample.context_grid_thw = context["pixel_values"], context["image_grid_thw"]
        return sample

    @staticmethod
    def batch(samples: list[SampleRegions | None]) -> dict[str, torch.Tensor]:
        """The model's region inputs for a batch: every sample's regions, concatenated in order."""
        samples = [sample for sample in samples if sample is not None]
        if not samples:
            return {}
        crops = [crop for sample in samples for crop in sample.crops]
        inputs = {
            "region_pixel_values": torch.cat([sample.pixel_values for sample in samples]),
            "region_grid_thw": torch.cat([sample.grid_thw for sample in samples]),
            "region_masks": torch.cat([torch.from_numpy(crop.mask).float().flatten() for crop in crops]),
            "region_mask_hw": torch.tensor([crop.mask.shape for crop in crops], dtype=torch.long),
            "region_boxes": position_boxes(crops),
        }
        if samples[0].context_pixel_values is not None:
            inputs["region_context_pixel_values"] = torch.cat([sample.context_pixel_values for sample in samples])
            inputs["region_context_grid_thw"] = torch.cat([sample.context_grid_thw for sample in samples])
            inputs["region_view_ids"] = torch.tensor([i for sample in samples for i in sample.view_ids])
        return inputs

    @staticmethod
    def _image_index(region: Any, num_images: int, sample_index: int, region_index: int) -> int:
        """Which of the sample's images a region is on."""
        where = f"sample {sample_index}, region {region_index}"
        if isinstance(region, dict) and "image_index" in region:
            return validation.image_index(region["image_index"], num_images, where)
        if num_images > 1:
            raise ValueError(
                f"{where}: the sample has {num_images} images; say which one the region is on with "
                '{"image_index": k, "mask": ...}.'
            )
        return 0

    def _context_views(
        self, images: list[np.ndarray], crops: list[ObjectCrop], image_ids: list[int]
    ) -> tuple[list[np.ndarray], list[int]]:
        """Lite's global and local view of each image with regions (the local view is taken around the image's FIRST
        region, as the original caches it), and each region's image among them, local to the sample (so that the
        indices stay right when samples are split or joined along the batch)."""
        first_crop: dict[int, ObjectCrop] = {}
        for crop, image_id in zip(crops, image_ids):
            first_crop.setdefault(image_id, crop)
        order = list(first_crop)
        views = [
            view
            for i in order
            for view in context_views(images[i], first_crop[i].box, self.global_view_size, self.local_view_size)
        ]
        return views, [order.index(image_id) for image_id in image_ids]

    def _patchify(self, images: list[np.ndarray], budget_divisor: int) -> BatchFeature:
        """Patches of images, each with the image processor's pixel budget divided by `budget_divisor`."""
        size = dict(self.image_processor.size)
        size["longest_edge"] = size["longest_edge"] // budget_divisor
        return self.image_processor(images=images, size=size, return_tensors="pt")


def _without_image_index(region: Any) -> Any:
    if isinstance(region, dict) and "image_index" in region:
        return {key: value for key, value in region.items() if key != "image_index"}
    return region


__all__ = [
    "ObjectCrop",
    "PixelReferRegionProcessor",
    "SampleRegions",
    "context_views",
    "crop_object",
    "crop_object_lite",
    "position_boxes",
    "scale_factor",
]
