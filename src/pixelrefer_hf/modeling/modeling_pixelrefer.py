"""PixelRefer: VideoLLaMA3 with object tokens for user-given regions.

The vision encoder, projector, Qwen2 language model, image/video paths and generation plumbing are transformers'
VideoLLaMA3. This module adds one more modality, regions: the crops of all regions of a batch are encoded with the
image(s) in one vision-encoder call, turned into object tokens by the Scale-Adaptive Object Tokenizer and scattered
into the `<REGION>` placeholder positions. Region features are computed in the prefill step only.
"""

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llama_3.modeling_video_llama_3 import (
    VideoLlama3CausalLMOutputWithPast,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Model,
)
from transformers.utils import can_return_tuple

from .configuration_pixelrefer import PixelReferConfig
from .object_infusion import PixelReferObjectInfusion
from .object_tokenizer import PixelReferObjectTokenizer


REGION_INPUT_NAMES = (
    "region_pixel_values",
    "region_grid_thw",
    "region_masks",
    "region_mask_hw",
    "region_boxes",
    "region_image_sizes",
    "region_kmeans_init",
    "region_global_pixel_values",
    "region_global_grid_thw",
    "region_local_pixel_values",
    "region_local_grid_thw",
    "region_view_ids",
)


def _pad_views(features: torch.Tensor, grid_thw: torch.LongTensor) -> tuple[torch.Tensor, torch.BoolTensor | None]:
    """Features `(sum(n_v), C)` of V views -> padded `(V, max(n_v), C)` and the padding mask (None if no padding)."""
    sizes = grid_thw.prod(-1)
    padded = pad_sequence(list(features.split(sizes.tolist())), batch_first=True)
    if bool((sizes == sizes[0]).all()):
        return padded, None
    return padded, torch.arange(padded.shape[1], device=sizes.device)[None, :] >= sizes[:, None]


class PixelReferModel(VideoLlama3Model):
    config_class = PixelReferConfig
    config: PixelReferConfig

    def __init__(self, config: PixelReferConfig):
        super().__init__(config)
        self.object_tokenizer = PixelReferObjectTokenizer(config)
        self.object_infusion = PixelReferObjectInfusion(config) if config.object_only else None
        self.post_init()

    def encode_vision(
        self, groups: list[tuple[torch.Tensor, torch.LongTensor, torch.LongTensor]]
    ) -> list[torch.Tensor]:
        """Runs the vision encoder ONCE over several groups of images (varlen: one attention block per image).

        Args:
            groups: `(pixel_values (sum(patches), 3 * patch**2), grid_thw (N, 3), merge_sizes (N,))` per group, e.g.
                the images, then the region crops, then Lite's context views.
        Returns:
            Per group, the features `(sum(patches / merge_size**2), C)`.
        """
        pixel_values = torch.cat([pixels for pixels, _, _ in groups])
        if self.config.round_pixels_to_bfloat16:
            pixel_values = pixel_values.to(torch.bfloat16)
        features = self.vision_model(
            pixel_values=pixel_values.to(self.vision_model.dtype),
            grid_thw=torch.cat([grid for _, grid, _ in groups]),
            merge_sizes=torch.cat([merge for _, _, merge in groups]),
        ).last_hidden_state
        sizes = [int((grid.prod(-1) // merge**2).sum()) for _, grid, merge in groups]
        return list(features.split(sizes))

    def get_region_features(
        self,
        crop_features: torch.Tensor,
        region_grid_thw: torch.LongTensor,
        region_masks: torch.Tensor,
        region_mask_hw: torch.LongTensor,
        region_boxes: torch.Tensor,
        region_image_sizes: torch.LongTensor,
        region_kmeans_init: torch.LongTensor | None = None,
        global_features: torch.Tensor | None = None,
        region_global_grid_thw: torch.LongTensor | None = None,
        local_features: torch.Tensor | None = None,
        region_local_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Object tokens of all regions, in region order.

        Args:
            crop_features: `(sum(h_i * w_i), C)` vision features of the crops.
            region_grid_thw: `(R, 3)` crop grids.
            region_masks: `(sum(mh_i * mw_i),)` masks on the mask grids.
            region_mask_hw: `(R, 2)` mask grids.
            region_boxes: `(R, 4)` crop boxes (x0, y0, x1, y1), inclusive pixels of the source images.
            region_image_sizes: `(R, 2)` (height, width) of the source images.
            region_kmeans_init: `(R, mask_num)` k-means start per region (indices into its masked cells), or None for
                the deterministic default.
            global_features, local_features: Lite only, `(sum(n_v), C)` features of the V global / local views.
            region_global_grid_thw, region_local_grid_thw: Lite only, `(V, 3)` grids of the views.
            region_view_ids: Lite only, `(R,)` index of each region's views.
        Returns:
            `(sum(tokens_i), D)` object tokens: `tokens_i = min(mask_num, masked cells)` for the full model, always
            `mask_num` (zero padded before infusion) for Lite.
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
        if self.object_infusion is None:
            valid = torch.arange(pooled.tokens.shape[1], device=pooled.counts.device) < pooled.counts[:, None]
            return self.object_tokenizer(pooled.tokens[valid])
        local_context, local_padding = _pad_views(local_features, region_local_grid_thw)
        global_context, global_padding = _pad_views(global_features, region_global_grid_thw)
        view_ids = region_view_ids.to(local_context.device)
        infused = self.object_infusion(
            pooled.tokens,
            local_context[view_ids],
            global_context[view_ids],
            local_padding[view_ids] if local_padding is not None else None,
            global_padding[view_ids] if global_padding is not None else None,
        )
        return self.object_tokenizer(infused.flatten(0, 1))

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
        region_global_pixel_values: torch.Tensor | None = None,
        region_global_grid_thw: torch.LongTensor | None = None,
        region_local_pixel_values: torch.Tensor | None = None,
        region_local_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
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
        region_global_pixel_values, region_local_pixel_values (`torch.Tensor`, Lite only):
            Patches of the global (whole image) and local (object surroundings) context views.
        region_global_grid_thw, region_local_grid_thw (`torch.LongTensor` of shape `(num_views, 3)`, Lite only):
            Grids of the context views.
        region_view_ids (`torch.LongTensor` of shape `(num_regions,)`, Lite only):
            Index of the context views of each region.
        """
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if region_pixel_values is not None:
            groups = [(region_pixel_values, region_grid_thw)]
            if self.object_infusion is not None:
                if region_global_pixel_values is None or region_local_pixel_values is None or region_view_ids is None:
                    raise ValueError(
                        "PixelRefer-Lite needs each region's global and local context views "
                        "(region_global_*, region_local_*, region_view_ids); build the inputs with this checkpoint's "
                        "processor, which has object_only=True."
                    )
                groups += [(region_global_pixel_values, region_global_grid_thw)]
                groups += [(region_local_pixel_values, region_local_grid_thw)]
            groups = [(pixels, grid, torch.ones_like(grid[:, 0])) for pixels, grid in groups]
            mm_encoder_outputs = dict(mm_encoder_outputs or {})
            media = {}
            if pixel_values is not None and "image" not in mm_encoder_outputs:
                media["image"] = (pixel_values, image_grid_thw, image_merge_sizes)
            if pixel_values_videos is not None and "video" not in mm_encoder_outputs:
                media["video"] = (pixel_values_videos, video_grid_thw, video_merge_sizes)
            features = self.encode_vision(list(media.values()) + groups)
            for modality, (_, grid_thw, merge_sizes) in media.items():
                media_features = features.pop(0)
                embeds = self.projector(media_features)
                split = (grid_thw.prod(-1) // merge_sizes**2).tolist()
                mm_encoder_outputs[modality] = BaseModelOutputWithPooling(
                    last_hidden_state=media_features, pooler_output=torch.split(embeds, split)
                )
            pixel_values = None if "image" in media else pixel_values
            pixel_values_videos = None if "video" in media else pixel_values_videos
            mm_encoder_outputs = mm_encoder_outputs or None
            crop_features, *view_features = features
            global_features, local_features = view_features if view_features else (None, None)
            region_features = self.get_region_features(
                crop_features,
                region_grid_thw,
                region_masks,
                region_mask_hw,
                region_boxes,
                region_image_sizes,
                region_kmeans_init,
                global_features,
                region_global_grid_thw,
                local_features,
                region_local_grid_thw,
                region_view_ids,
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

    @can_return_tuple
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
        region_global_pixel_values: torch.Tensor | None = None,
        region_global_grid_thw: torch.LongTensor | None = None,
        region_local_pixel_values: torch.Tensor | None = None,
        region_local_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ):
        r"""
        Same as [`VideoLlama3ForConditionalGeneration.forward`], plus the `region_*` inputs of
        [`PixelReferModel.forward`] that [`PixelReferProcessor`] produces, and `logits_to_keep` (compute the logits of
        the last `logits_to_keep` positions only; `generate` keeps 1 at prefill instead of the whole prompt).
        """
        outputs = self.model(
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
            region_pixel_values=region_pixel_values,
            region_grid_thw=region_grid_thw,
            region_masks=region_masks,
            region_mask_hw=region_mask_hw,
            region_boxes=region_boxes,
            region_image_sizes=region_image_sizes,
            region_kmeans_init=region_kmeans_init,
            region_global_pixel_values=region_global_pixel_values,
            region_global_grid_thw=region_global_grid_thw,
            region_local_pixel_values=region_local_pixel_values,
            region_local_grid_thw=region_local_grid_thw,
            region_view_ids=region_view_ids,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return VideoLlama3CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            video_hidden_states=outputs.video_hidden_states,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in REGION_INPUT_NAMES:
                model_inputs.pop(name, None)
        return model_inputs


__all__ = ["PixelReferModel", "PixelReferForConditionalGeneration", "REGION_INPUT_NAMES"]
