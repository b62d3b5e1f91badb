"""SAOT, data side of a batch: the regions of each sample -> crops, masks, boxes and (Lite) context views -> tensors.

[`PixelReferRegionProcessor`] is the region counterpart of the image processor: it turns the regions of one sample
into [`SampleRegions`] (crops, patches, and for Lite each image's context views), and
[`PixelReferRegionProcessor.batch`] joins the samples of a batch into the model's region inputs.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from .object_crops import ObjectCrop, context_views, crop_object, crop_object_lite, position_boxes
from .regions import region_to_mask


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
            mask = region_to_mask(region, image.shape[:2], sample_index=sample_index, region_index=region_index)
            crop = crop_fn(
                image, mask, self.max_object_tokens, patch_size, self.margin_patches, self.max_object_patches
            )
            if crop.num_tokens == 0:
                raise ValueError(
                    f"sample {sample_index}, region {region_index}: the mask vanishes on the crop's patch grid; "
                    "pass a mask that covers at least one pixel more."
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
        if isinstance(region, dict) and "image_index" in region:
            image_index = region["image_index"]
            if not 0 <= image_index < num_images:
                raise ValueError(
                    f"sample {sample_index}, region {region_index}: image_index {image_index} but the sample has "
                    f"{num_images} image(s); pass an index in [0, {num_images - 1}]."
                )
            return image_index
        if num_images > 1:
            raise ValueError(
                f"sample {sample_index}, region {region_index}: the sample has {num_images} images; say which one "
                'the region is on with {"image_index": k, "mask": ...}.'
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


__all__ = ["PixelReferRegionProcessor", "SampleRegions"]
