"""PixelRefer: VideoLLaMA3 with object tokens for user-given regions.

The vision encoder, projector, Qwen2 language model and image/video features are transformers' VideoLLaMA3. This
module adds one more modality, regions: the crops of all regions of a batch are encoded with the image(s) in one
vision-encoder call, turned into object tokens by the Scale-Adaptive Object Tokenizer (and, for PixelRefer-Lite,
Object-Centric Infusion) and scattered into the `<REGION>` placeholder positions.

Region inputs are concatenated over the regions of the batch, in placeholder order, and every index in them is local
to its sample; which sample a region belongs to follows from the `<REGION>` placeholders of each sample. Inputs split
or joined along the batch (a pipeline's collation, a data collator) therefore stay valid as they are. In `generate`,
every modality is encoded once before prefill into `mm_encoder_outputs`, so that beam search, `num_return_sequences`
and chunked prefill expand and slice the object tokens per sample like image features.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModel, GenerationConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.video_llama_3.modeling_video_llama_3 import (
    VideoLlama3CausalLMOutputWithPast,
    VideoLlama3ForConditionalGeneration,
    VideoLlama3Model,
    VideoLlama3ModelOutputWithPast,
    VideoLlama3PreTrainedModel,
    VideoLlama3Projector,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.import_utils import torch_compilable_check

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
IMAGE_INPUT_NAMES = ("pixel_values", "image_grid_thw", "image_merge_sizes")
VIDEO_INPUT_NAMES = ("pixel_values_videos", "video_grid_thw", "video_merge_sizes", "video_compression_mask")
MEDIA_INPUT_NAMES = (*IMAGE_INPUT_NAMES, *VIDEO_INPUT_NAMES, *REGION_INPUT_NAMES)
PLACEHOLDER_NAMES = {"image": "<image>", "video": "<|video_pad|>", "region": "<REGION>"}


@dataclass
class PixelReferModelOutputWithPast(VideoLlama3ModelOutputWithPast):
    r"""
    region_hidden_states (`torch.Tensor` of shape `(num_object_tokens, hidden_size)`, *optional*):
        The object tokens of all regions of the batch (one row per `<REGION>` placeholder, in placeholder order), in
        the LLM width.
    """

    region_hidden_states: torch.Tensor | None = None


@dataclass
class PixelReferCausalLMOutputWithPast(VideoLlama3CausalLMOutputWithPast):
    r"""
    region_hidden_states (`torch.Tensor` of shape `(num_object_tokens, hidden_size)`, *optional*):
        The object tokens of all regions of the batch (one row per `<REGION>` placeholder, in placeholder order).
    """

    region_hidden_states: torch.Tensor | None = None


def _pad_views(features: torch.Tensor, grid_thw: torch.LongTensor) -> tuple[torch.Tensor, torch.BoolTensor | None]:
    """Features `(sum(n_v), C)` of V views -> padded `(V, max(n_v), C)` and the padding mask (None if no padding)."""
    sizes = grid_thw.prod(-1)
    padded = pad_sequence(list(features.split(sizes.tolist())), batch_first=True)
    if bool((sizes == sizes[0]).all()):
        return padded, None
    return padded, torch.arange(padded.shape[1], device=sizes.device)[None, :] >= sizes[:, None]


def region_sample_ids(placeholders: torch.BoolTensor, tokens_per_region: torch.LongTensor) -> torch.LongTensor:
    """The sample of each region: regions fill the `<REGION>` placeholders in order over (batch, sequence).

    Args:
        placeholders: `(batch_size, sequence_length)` True at the `<REGION>` positions.
        tokens_per_region: `(num_regions,)` object tokens of each region.
    Returns:
        `(num_regions,)` batch index of each region.
    """
    sample_ends = placeholders.sum(-1).cumsum(0).to(tokens_per_region.device)
    region_starts = tokens_per_region.cumsum(0) - tokens_per_region
    return torch.searchsorted(sample_ends, region_starts, right=True)


def global_view_ids(view_ids: torch.LongTensor, sample_ids: torch.LongTensor, num_views: int) -> torch.LongTensor:
    """Sample-local Lite view indices `(R,)` -> indices into all `num_views` views of the batch (views come sample
    after sample; a sample has as many views as its largest local index + 1)."""
    num_samples = int(sample_ids.max()) + 1
    views_per_sample = torch.zeros(num_samples, dtype=torch.long, device=view_ids.device)
    views_per_sample = views_per_sample.scatter_reduce(0, sample_ids, view_ids + 1, reduce="amax")
    torch_compilable_check(
        views_per_sample.sum() == num_views,
        lambda: (
            f"region_view_ids name {int(views_per_sample.sum())} context views, but {num_views} were given; "
            "build the inputs with this checkpoint's processor, whose view indices are local to each sample."
        ),
    )
    offsets = views_per_sample.cumsum(0) - views_per_sample
    return view_ids + offsets[sample_ids]


class PixelReferPreTrainedModel(VideoLlama3PreTrainedModel):
    config: PixelReferConfig
    config_class = PixelReferConfig


class PixelReferModel(PixelReferPreTrainedModel, VideoLlama3Model):
    """VideoLLaMA3's vision encoder, projector and language model, plus the object tokenizer (and, for Lite, the
    object infusion). Lite has no projector: its LLM never sees image features."""

    def __init__(self, config: PixelReferConfig):
        PixelReferPreTrainedModel.__init__(self, config)
        self.vision_model = AutoModel.from_config(config.vision_config)
        self.projector = None if config.object_only else VideoLlama3Projector(config)
        self.language_model = AutoModel.from_config(config.text_config)
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

    def _project_media(
        self, features: torch.Tensor, grid_thw: torch.LongTensor, merge_sizes: torch.LongTensor
    ) -> BaseModelOutputWithPooling:
        """Vision features `(sum(tokens), C)` of images or videos -> their LLM embeddings, one tensor each."""
        if self.projector is None:
            raise ValueError(
                "PixelRefer-Lite (object_only=True) feeds no image or video tokens to its LLM; pass images and videos "
                "only as the source of regions (its processor does), not as pixel_values / pixel_values_videos."
            )
        embeds = self.projector(features)
        split = (grid_thw.prod(-1) // merge_sizes**2).tolist()
        return BaseModelOutputWithPooling(last_hidden_state=features, pooler_output=torch.split(embeds, split))

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.LongTensor,
        image_merge_sizes: torch.LongTensor,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        """LLM embeddings of images `(sum(patches), 3 * patch**2)`, one tensor per image (as the forward computes
        them, bfloat16 pixel rounding included); videos go through here too (`get_video_features`)."""
        (features,) = self.encode_vision([(pixel_values, image_grid_thw, image_merge_sizes)])
        return self._project_media(features, image_grid_thw, image_merge_sizes)

    def object_tokens(
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
        view_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Object tokens of all regions from their encoded crops (and Lite context views), in region order.

        Args:
            crop_features: `(sum(h_i * w_i), C)` vision features of the crops.
            region_grid_thw, region_masks, region_mask_hw, region_boxes, region_image_sizes, region_kmeans_init: as
                in [`PixelReferModel.forward`].
            global_features, local_features: Lite only, `(sum(n_v), C)` features of the V global / local views.
            region_global_grid_thw, region_local_grid_thw: Lite only, `(V, 3)` grids of the views.
            view_ids: Lite only, `(R,)` index of each region's views among the V views.
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
        view_ids = view_ids.to(local_context.device)
        infused = self.object_infusion(
            pooled.tokens,
            local_context[view_ids],
            global_context[view_ids],
            local_padding[view_ids] if local_padding is not None else None,
            global_padding[view_ids] if global_padding is not None else None,
        )
        return self.object_tokenizer(infused.flatten(0, 1))

    def tokens_per_region(self, region_masks: torch.Tensor, region_mask_hw: torch.LongTensor) -> torch.LongTensor:
        """`(R,)` object tokens of each region: `min(mask_num, masked cells)`, always `mask_num` for Lite."""
        if self.config.object_only:
            return torch.full((len(region_mask_hw),), self.config.mask_num, device=region_mask_hw.device)
        cells = region_mask_hw.prod(-1)
        region = torch.repeat_interleave(torch.arange(len(cells), device=cells.device), cells)
        masked = torch.zeros_like(cells).index_add_(0, region, (region_masks.to(cells.device) > 0).long())
        return masked.clamp(max=self.config.mask_num)

    def placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None, token_id: int
    ) -> torch.BoolTensor:
        """`(batch_size, sequence_length)` True at the positions of placeholder `token_id`."""
        if input_ids is not None:
            return input_ids == token_id
        token = torch.full((), token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def get_multimodal_features(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        image_merge_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        video_merge_sizes: torch.LongTensor | None = None,
        video_compression_mask: torch.BoolTensor | None = None,
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
    ) -> dict[str, BaseModelOutputWithPooling]:
        """Images, videos and regions of a batch encoded in ONE vision-encoder call (arguments as in `forward`).

        Returns:
            Per modality present (`"image"`, `"video"`, `"region"`), its LLM embeddings as `pooler_output`: one
            tensor per image, per video (after token compression) and per region, in placeholder order.
        """
        groups = {}
        if pixel_values is not None:
            groups["image"] = (pixel_values, image_grid_thw, image_merge_sizes)
        if pixel_values_videos is not None:
            groups["video"] = (pixel_values_videos, video_grid_thw, video_merge_sizes)
        if region_pixel_values is not None:
            groups["crop"] = (region_pixel_values, region_grid_thw, torch.ones_like(region_grid_thw[:, 0]))
            if self.config.object_only:
                if region_global_pixel_values is None or region_local_pixel_values is None or region_view_ids is None:
                    raise ValueError(
                        "PixelRefer-Lite needs each region's global and local context views (region_global_*, "
                        "region_local_*, region_view_ids); build the inputs with this checkpoint's processor, which "
                        "has object_only=True."
                    )
                groups["global"] = (region_global_pixel_values, region_global_grid_thw)
                groups["local"] = (region_local_pixel_values, region_local_grid_thw)
                for view in ("global", "local"):
                    pixels, grid = groups[view]
                    groups[view] = (pixels, grid, torch.ones_like(grid[:, 0]))
        if not groups:
            return {}
        features = dict(zip(groups, self.encode_vision(list(groups.values()))))
        outputs = {}
        if "image" in features:
            outputs["image"] = self._project_media(features["image"], image_grid_thw, image_merge_sizes)
        if "video" in features:
            video = self._project_media(features["video"], video_grid_thw, video_merge_sizes)
            if video_compression_mask is not None:
                keep = video_compression_mask.to(features["video"].device).split([len(e) for e in video.pooler_output])
                video.pooler_output = tuple(embeds[kept] for embeds, kept in zip(video.pooler_output, keep))
            outputs["video"] = video
        if "crop" in features:
            tokens_per_region = self.tokens_per_region(region_masks, region_mask_hw)
            view_ids = None
            if self.config.object_only:
                placeholders = self.placeholder_mask(input_ids, inputs_embeds, self.config.region_token_id)
                sample_ids = region_sample_ids(placeholders, tokens_per_region)
                view_ids = global_view_ids(
                    region_view_ids.to(sample_ids.device), sample_ids, len(region_local_grid_thw)
                )
            tokens = self.object_tokens(
                features["crop"],
                region_grid_thw,
                region_masks,
                region_mask_hw,
                region_boxes,
                region_image_sizes,
                region_kmeans_init,
                features.get("global"),
                region_global_grid_thw,
                features.get("local"),
                region_local_grid_thw,
                view_ids,
            )
            outputs["region"] = BaseModelOutputWithPooling(
                last_hidden_state=features["crop"], pooler_output=tokens.split(tokens_per_region.tolist())
            )
        return outputs

    def _scatter(
        self,
        inputs_embeds: torch.Tensor,
        placeholders: torch.BoolTensor,
        features: torch.Tensor,
        name: str,
    ) -> torch.Tensor:
        """Writes `features` `(n, D)` into the `n` placeholder positions `(B, L)` of `inputs_embeds` `(B, L, D)`."""
        torch_compilable_check(
            placeholders.sum() == len(features),
            lambda: (
                f"The text has {int(placeholders.sum())} {name} tokens but the inputs give {len(features)} "
                "features for them. Build the inputs with PixelReferProcessor, which expands each <image>, <video> "
                "and <region> into the right number of placeholder tokens."
            ),
        )
        mask = placeholders.unsqueeze(-1).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.device, inputs_embeds.dtype))

    @can_return_tuple
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
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | PixelReferModelOutputWithPast:
        r"""
        Image and video inputs as in [`VideoLlama3Model.forward`], plus the region inputs that [`PixelReferProcessor`]
        produces, concatenated over the regions of the batch in `<REGION>` placeholder order:

        region_pixel_values (`torch.Tensor` of shape `(sum(h_i * w_i), 3 * patch_size**2)`):
            Patches of the scale-adaptive crop of every region.
        region_grid_thw (`torch.LongTensor` of shape `(num_regions, 3)`):
            Patch grid (1, h_i, w_i) of each crop.
        region_masks (`torch.Tensor` of shape `(sum(mh_i * mw_i),)`):
            Each region's mask on its mask grid (the crop's patch grid before any resize), flattened row-major.
        region_mask_hw (`torch.LongTensor` of shape `(num_regions, 2)`):
            Mask grid (mh_i, mw_i) of each region.
        region_boxes (`torch.Tensor` of shape `(num_regions, 4)`):
            Crop box (x0, y0, x1, y1) of each region, inclusive pixels of its source image.
        region_image_sizes (`torch.LongTensor` of shape `(num_regions, 2)`):
            (height, width) of each region's source image.
        region_kmeans_init (`torch.LongTensor` of shape `(num_regions, mask_num)`, *optional*):
            Start of the object-token clustering per region; defaults to the deterministic evenly spaced start.
        region_global_pixel_values, region_local_pixel_values (`torch.Tensor`, Lite only):
            Patches of the global (whole image) and local (object surroundings) context views, sample after sample.
        region_global_grid_thw, region_local_grid_thw (`torch.LongTensor` of shape `(num_views, 3)`, Lite only):
            Grids of the context views.
        region_view_ids (`torch.LongTensor` of shape `(num_regions,)`, Lite only):
            Index of each region's context views among the views of ITS sample.
        mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
            Pre-encoded `"image"`, `"video"` and `"region"` features (see `get_multimodal_features`), as `generate`
            passes them; a modality given here is not encoded again.
        """
        # The image, video and region arguments, by the names `MEDIA_INPUT_NAMES` lists once.
        media = {name: value for name, value in locals().items() if name in MEDIA_INPUT_NAMES}
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        encoded = dict(mm_encoder_outputs or {})
        encoded.update(self.get_multimodal_features(input_ids, inputs_embeds, **media))
        hidden = {}
        for modality in ("image", "video", "region"):
            if encoded.get(modality) is None:
                continue
            hidden[modality] = torch.cat(list(encoded[modality].pooler_output))
            placeholders = self.placeholder_mask(
                input_ids, inputs_embeds, getattr(self.config, f"{modality}_token_id")
            )
            inputs_embeds = self._scatter(inputs_embeds, placeholders, hidden[modality], PLACEHOLDER_NAMES[modality])

        outputs = self.language_model(
            input_ids=None,
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return PixelReferModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=hidden.get("image"),
            video_hidden_states=hidden.get("video"),
            region_hidden_states=hidden.get("region"),
        )


class PixelReferForConditionalGeneration(PixelReferPreTrainedModel, VideoLlama3ForConditionalGeneration):
    def __init__(self, config: PixelReferConfig):
        PixelReferPreTrainedModel.__init__(self, config)
        self.model = PixelReferModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_multimodal_features(self, **kwargs) -> dict[str, BaseModelOutputWithPooling]:
        """See [`PixelReferModel.get_multimodal_features`]."""
        return self.model.get_multimodal_features(**kwargs)

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
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | PixelReferCausalLMOutputWithPast:
        r"""
        The inputs of [`PixelReferModel.forward`], plus `labels` for the causal-LM loss and `logits_to_keep` (compute
        the logits of the last `logits_to_keep` positions only; `generate` keeps 1 at prefill).
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
            mm_encoder_outputs=mm_encoder_outputs,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return PixelReferCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
            video_hidden_states=outputs.video_hidden_states,
            region_hidden_states=outputs.region_hidden_states,
        )

    def _maybe_prepare_encoder_kwargs_for_generation(
        self,
        inputs_tensor: torch.Tensor,
        model_kwargs: dict,
        model_input_name: str | None,
        generation_config: GenerationConfig,
    ) -> dict:
        """Encodes images, videos and regions once, before prefill, into `mm_encoder_outputs` (one vision call), so
        that generation's expansion (beams, `num_return_sequences`) and chunked prefill see them per sample."""
        raw = {name: model_kwargs.pop(name) for name in MEDIA_INPUT_NAMES if model_kwargs.get(name) is not None}
        if not raw:
            return model_kwargs
        input_ids = inputs_tensor if model_input_name == "input_ids" else model_kwargs.get("input_ids")
        encoded = self.model.get_multimodal_features(
            input_ids=input_ids, inputs_embeds=model_kwargs.get("inputs_embeds"), **raw
        )
        model_kwargs["mm_encoder_outputs"] = {**(model_kwargs.get("mm_encoder_outputs") or {}), **encoded}
        return model_kwargs

    def _expand_multimodal_outputs(
        self,
        input_ids: torch.LongTensor,
        mm_encoder_output: dict,
        expand_size: int = 1,
        inputs_embeds: torch.Tensor | None = None,
    ) -> dict:
        """Expands image/video features as VideoLLaMA3 does, and the object tokens sample by sample."""
        regions = mm_encoder_output.pop("region", None)
        mm_encoder_output = super()._expand_multimodal_outputs(
            input_ids, mm_encoder_output, expand_size, inputs_embeds
        )
        if regions is not None:
            per_region = list(regions.pooler_output)
            placeholders = self.model.placeholder_mask(input_ids, inputs_embeds, self.config.region_token_id)
            sample_ids = region_sample_ids(placeholders, torch.tensor([len(tokens) for tokens in per_region])).tolist()
            per_sample = [[t for t, s in zip(per_region, sample_ids) if s == b] for b in range(len(placeholders))]
            mm_encoder_output["region"] = BaseModelOutputWithPooling(
                pooler_output=tuple(t for group in per_sample for _ in range(expand_size) for t in group)
            )
        return mm_encoder_output


__all__ = [
    "PixelReferForConditionalGeneration",
    "PixelReferModel",
    "PixelReferPreTrainedModel",
    "REGION_INPUT_NAMES",
]
