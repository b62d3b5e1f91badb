"""PixelRefer: VideoLLaMA3 with object tokens for user-given regions.

The vision encoder, projector, Qwen2 language model, image/video paths and generation plumbing are transformers'
VideoLLaMA3. This module adds one more modality, regions: the crops of all regions of a batch are encoded with the
image(s) in one vision-encoder call, turned into object tokens by the Scale-Adaptive Object Tokenizer and scattered
into the `<REGION>` placeholder positions. Region features are computed in the prefill step only.
"""

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llama_3.modeling_video_llama_3 import (
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Model,
)
from transformers.utils import logging

from .configuration_pixelrefer import PixelReferConfig
from .object_tokenizer import PixelReferObjectTokenizer


logger = logging.get_logger(__name__)

REGION_INPUT_NAMES = (
    "region_pixel_values",
    "region_grid_thw",
    "region_masks",
    "region_mask_hw",
    "region_boxes",
    "region_image_sizes",
    "region_kmeans_init",
)


class PixelReferModel(VideoLlama3Model):
    config_class = PixelReferConfig
    config: PixelReferConfig

    def __init__(self, config: PixelReferConfig):
        super().__init__(config)
        self.object_tokenizer = PixelReferObjectTokenizer(config)
        self.post_init()

    def encode_images_and_crops(
        self,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.LongTensor | None,
        image_merge_sizes: torch.LongTensor | None,
        region_pixel_values: torch.Tensor,
        region_grid_thw: torch.LongTensor,
    ) -> tuple[BaseModelOutputWithPooling | None, torch.Tensor]:
        """Runs the vision encoder once over the images and all region crops (varlen, one attention block each).

        Args:
            pixel_values: `(sum(image patches), 3 * patch**2)` or None.
            region_pixel_values: `(sum(h_i * w_i), 3 * patch**2)` crop patches, row-major per crop.
        Returns:
            The image features as `get_image_features` returns them (None without images), and the crop features
            `(sum(h_i * w_i), C)`.
        """
        crop_merge_sizes = torch.ones(len(region_grid_thw), dtype=torch.long, device=region_grid_thw.device)
        if pixel_values is None:
            crop_features = self.vision_model(
                pixel_values=region_pixel_values, grid_thw=region_grid_thw, merge_sizes=crop_merge_sizes
            ).last_hidden_state
            return None, crop_features

        features = self.vision_model(
            pixel_values=torch.cat([pixel_values, region_pixel_values.to(pixel_values.dtype)]),
            grid_thw=torch.cat([image_grid_thw, region_grid_thw]),
            merge_sizes=torch.cat([image_merge_sizes, crop_merge_sizes]),
        ).last_hidden_state
        image_tokens = image_grid_thw.prod(-1) // image_merge_sizes**2
        image_features, crop_features = features.split([int(image_tokens.sum()), len(features) - int(image_tokens.sum())])
        image_embeds = self.projector(image_features)
        image_outputs = BaseModelOutputWithPooling(
            last_hidden_state=image_features, pooler_output=torch.split(image_embeds, image_tokens.tolist())
        )
        return image_outputs, crop_features

    def get_region_features(
        self,
        crop_features: torch.Tensor,
        region_grid_thw: torch.LongTensor,
        region_masks: torch.Tensor,
        region_mask_hw: torch.LongTensor,
        region_boxes: torch.Tensor,
        region_image_sizes: torch.LongTensor,
        region_kmeans_init: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Object tokens of all regions, in region order.

        Args:
            crop_features: `(sum(h_i * w_i), C)` vision features of the crops.
            region_grid_thw: `(R, 3)` crop grids.
            region_masks: `(sum(mh_i * mw_i),)` masks on the mask grids.
            region_mask_hw: `(R, 2)` mask grids.
            region_boxes: `(R, 4)` crop boxes (x0, y0, x1, y1), inclusive pixels of the source image.
            region_image_sizes: `(R, 2)` (height, width) of the source images.
            region_kmeans_init: `(R, mask_num)` k-means start per region (indices into its masked cells), or None for
                the deterministic default.
        Returns:
            `(sum(tokens_i), D)` object tokens, `tokens_i <= mask_num`.
        """
        pooled = self.object_tokenizer.pool(
            crop_features,
            region_grid_thw[:, 1:],
            region_masks,
            region_mask_hw,
            region_boxes,
            region_image_sizes,
            initial_indices=region_kmeans_init,
        )
        valid = torch.arange(pooled.tokens.shape[1], device=pooled.counts.device) < pooled.counts[:, None]
        return self.object_tokenizer(pooled.tokens[valid])

    def get_region_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, region_features: torch.Tensor
    ) -> torch.BoolTensor:
        """Mask `(B, L, 1)` of the `<REGION>` positions; checks there is one per object token."""
        if input_ids is None:
            region_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.region_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            region_mask = (inputs_embeds == region_embedding).all(-1)
        else:
            region_mask = input_ids == self.config.region_token_id
        num_placeholders = int(region_mask.sum())
        if num_placeholders != len(region_features):
            raise ValueError(
                f"The text has {num_placeholders} <REGION> tokens but the regions give {len(region_features)} object "
                "tokens. Build the inputs with PixelReferProcessor, which expands each <region> into the right number "
                "of <REGION> tokens."
            )
        return region_mask.unsqueeze(-1).to(inputs_embeds.device)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        image_merge_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        video_merge_sizes: torch.LongTensor | None = None,
        video_compression_mask: torch.BoolTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        region_pixel_values: torch.Tensor | None = None,
        region_grid_thw: torch.LongTensor | None = None,
        region_masks: torch.Tensor | None = None,
        region_mask_hw: torch.LongTensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_image_sizes: torch.LongTensor | None = None,
        region_kmeans_init: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        region_pixel_values (`torch.Tensor` of shape `(sum(h_i * w_i), 3 * patch_size**2)`):
            Patches of the scale-adaptive crop of every region of the batch, regions in prompt order.
        region_grid_thw (`torch.LongTensor` of shape `(num_regions, 3)`):
            Patch grid (1, h_i, w_i) of each crop.
        region_masks (`torch.Tensor` of shape `(sum(mh_i * mw_i),)`):
            Each region's mask on its crop's patch grid, flattened row-major.
        region_mask_hw (`torch.LongTensor` of shape `(num_regions, 2)`):
            Mask grid (mh_i, mw_i) of each region.
        region_boxes (`torch.Tensor` of shape `(num_regions, 4)`):
            Crop box (x0, y0, x1, y1) of each region, inclusive pixels of its source image.
        region_image_sizes (`torch.LongTensor` of shape `(num_regions, 2)`):
            (height, width) of each region's source image.
        region_kmeans_init (`torch.LongTensor` of shape `(num_regions, mask_num)`, *optional*):
            Start of the object-token clustering per region; defaults to the deterministic evenly spaced start.
        """
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if region_pixel_values is not None:
            if mm_encoder_outputs is None and pixel_values is not None:
                image_outputs, crop_features = self.encode_images_and_crops(
                    pixel_values, image_grid_thw, image_merge_sizes, region_pixel_values, region_grid_thw
                )
                mm_encoder_outputs, pixel_values = {"image": image_outputs}, None
            else:
                _, crop_features = self.encode_images_and_crops(
                    None, None, None, region_pixel_values, region_grid_thw
                )
            region_features = self.get_region_features(
                crop_features,
                region_grid_thw,
                region_masks,
                region_mask_hw,
                region_boxes,
                region_image_sizes,
                region_kmeans_init,
            ).to(inputs_embeds.device, inputs_embeds.dtype)
            region_mask = self.get_region_placeholder_mask(input_ids, inputs_embeds, region_features)
            inputs_embeds = inputs_embeds.masked_scatter(region_mask, region_features)

        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            image_merge_sizes=image_merge_sizes,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            video_merge_sizes=video_merge_sizes,
            video_compression_mask=video_compression_mask,
            mm_encoder_outputs=mm_encoder_outputs,
            **kwargs,
        )


class PixelReferForConditionalGeneration(VideoLlama3ForConditionalGeneration):
    config_class = PixelReferConfig
    config: PixelReferConfig

    def __init__(self, config: PixelReferConfig):
        super().__init__(config)
        self.model = PixelReferModel(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        image_merge_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        video_merge_sizes: torch.LongTensor | None = None,
        video_compression_mask: torch.BoolTensor | None = None,
        mm_encoder_outputs: dict | None = None,
        region_pixel_values: torch.Tensor | None = None,
        region_grid_thw: torch.LongTensor | None = None,
        region_masks: torch.Tensor | None = None,
        region_mask_hw: torch.LongTensor | None = None,
        region_boxes: torch.Tensor | None = None,
        region_image_sizes: torch.LongTensor | None = None,
        region_kmeans_init: torch.LongTensor | None = None,
        **kwargs,
    ):
        r"""
        Same as [`VideoLlama3ForConditionalGeneration.forward`], plus the `region_*` inputs of
        [`PixelReferModel.forward`] that [`PixelReferProcessor`] produces.
        """
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            image_merge_sizes=image_merge_sizes,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            video_merge_sizes=video_merge_sizes,
            video_compression_mask=video_compression_mask,
            mm_encoder_outputs=mm_encoder_outputs,
            region_pixel_values=region_pixel_values,
            region_grid_thw=region_grid_thw,
            region_masks=region_masks,
            region_mask_hw=region_mask_hw,
            region_boxes=region_boxes,
            region_image_sizes=region_image_sizes,
            region_kmeans_init=region_kmeans_init,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in REGION_INPUT_NAMES:
                model_inputs.pop(name, None)
        return model_inputs


__all__ = ["PixelReferModel", "PixelReferForConditionalGeneration", "REGION_INPUT_NAMES"]
