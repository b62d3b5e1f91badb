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
from transformers import AutoModel, Cache, GenerationConfig
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
from transformers.utils import TransformersKwargs, add_start_docstrings_to_model_forward, can_return_tuple
from transformers.utils.import_utils import torch_compilable_check

from ..model_inputs import IMAGE_INPUT_NAMES, REGION_INPUT_NAMES, VIDEO_INPUT_NAMES
from .configuration_pixelrefer import PixelReferConfig
from .object_infusion import PixelReferObjectInfusion
from .object_tokenizer import PixelReferObjectTokenizer


# Everything the vision side reads: the processor's media inputs plus the optional k-means start.
MEDIA_INPUT_NAMES = (*IMAGE_INPUT_NAMES, *VIDEO_INPUT_NAMES, *REGION_INPUT_NAMES, "region_kmeans_init")
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds", "use_cache")
# What `PixelReferForConditionalGeneration.forward` hands on to `PixelReferModel.forward`.
MODEL_INPUT_NAMES = (*TEXT_INPUT_NAMES, *MEDIA_INPUT_NAMES, "mm_encoder_outputs")
MODALITIES = ("image", "video", "region")
PLACEHOLDER_NAMES = {"image": "<image>", "video": "<|video_pad|>", "region": "<REGION>"}

PIXELREFER_INPUTS_DOCSTRING = r"""
    Image and video inputs as in [`VideoLlama3Model.forward`], plus the region inputs that [`PixelReferProcessor`]
    produces, concatenated over the regions of the batch in `<REGION>` placeholder order (every index in them is
    local to its sample):

    region_pixel_values (`torch.Tensor` of shape `(sum(h_i * w_i), 3 * patch_size**2)`):
        Patches of the scale-adaptive crop of every region.
    region_grid_thw (`torch.LongTensor` of shape `(num_regions, 3)`):
        Patch grid (1, h_i, w_i) of each crop.
    region_masks (`torch.Tensor` of shape `(sum(mh_i * mw_i),)`):
        Each region's mask on its mask grid (the crop's patch grid before any resize), flattened row-major.
    region_mask_hw (`torch.LongTensor` of shape `(num_regions, 2)`):
        Mask grid (mh_i, mw_i) of each region.
    region_boxes (`torch.FloatTensor` of shape `(num_regions, 4)`):
        Each crop's box normalised by its source image, as the box position embedding reads it: channel 0 runs from
        `region_boxes[:, 0]` to `[:, 2]` over the crop's columns, channel 1 from `[:, 1]` to `[:, 3]` over its rows
        (see [`~pixelrefer_hf.processing.object_crops.position_boxes`]).
    region_context_pixel_values (`torch.Tensor` of shape `(sum(patches of the views), 3 * patch_size**2)`, Lite only):
        Patches of the context views of each image with regions: its global view (the whole image), then its local
        view (the surroundings of its first region); images sample after sample.
    region_context_grid_thw (`torch.LongTensor` of shape `(2 * num_context_images, 3)`, Lite only):
        Grids of the context views, in the same order.
    region_view_ids (`torch.LongTensor` of shape `(num_regions,)`, Lite only):
        Index of each region's context image among the context images of ITS sample.
    region_kmeans_init (`torch.LongTensor` of shape `(num_regions, max_object_tokens)`, *optional*):
        Start of the object-token clustering per region (indices into its masked cells); defaults to the
        deterministic evenly spaced start.
    mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
        Pre-encoded `"image"`, `"video"` and `"region"` features (see `get_multimodal_features`), as `generate`
        passes them; a modality given here is not encoded again.
"""
LM_INPUTS_DOCSTRING = r"""
    labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
        Targets of the causal-LM loss (`-100` where no loss is taken).
    logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
        Compute the logits of the last `logits_to_keep` positions only (0: all); `generate` keeps 1 at prefill.
"""


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


def _pad_views(views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.BoolTensor | None]:
    """V view features `(n_v, C)` -> padded `(V, max(n_v), C)` and the padding mask (None if no padding)."""
    sizes = torch.tensor([len(view) for view in views], device=views[0].device)
    padded = pad_sequence(views, batch_first=True)
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
            f"region_view_ids name {int(views_per_sample.sum())} context images, but {num_views} were given; "
            "build the inputs with this checkpoint's processor, whose view indices are local to each sample."
        ),
    )
    offsets = views_per_sample.cumsum(0) - views_per_sample
    return view_ids + offsets[sample_ids]


def _scatter(
    inputs_embeds: torch.Tensor, placeholders: torch.BoolTensor, features: torch.Tensor, name: str
) -> torch.Tensor:
    """Writes `features` `(n, D)` into the `n` placeholder positions `(B, L)` of `inputs_embeds` `(B, L, D)`."""
    torch_compilable_check(
        placeholders.sum() == len(features),
        lambda: (
            f"The text has {int(placeholders.sum())} {name} tokens but the inputs give {len(features)} features for "
            "them. Build the inputs with PixelReferProcessor, which expands each <image>, <video> and <region> into "
            "the right number of placeholder tokens."
        ),
    )
    mask = placeholders.unsqueeze(-1).to(inputs_embeds.device)
    return inputs_embeds.masked_scatter(mask, features.to(inputs_embeds.device, inputs_embeds.dtype))


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

    def get_region_features(
        self,
        region_pixel_values: torch.Tensor,
        region_grid_thw: torch.LongTensor,
        region_masks: torch.Tensor,
        region_mask_hw: torch.LongTensor,
        region_boxes: torch.Tensor,
        region_context_pixel_values: torch.Tensor | None = None,
        region_context_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
        region_kmeans_init: torch.LongTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        """Object tokens of regions (inputs as in `forward`): the crop features as `last_hidden_state` and, as
        `pooler_output`, one `(tokens_i, hidden_size)` tensor per region. For Lite inputs of several samples, pass
        their `input_ids` (or `inputs_embeds`): the `<REGION>` placeholders tell which sample each region is in."""
        regions = {name: value for name, value in locals().items() if name in MEDIA_INPUT_NAMES}
        return self.get_multimodal_features(input_ids, inputs_embeds, **regions)["region"]

    def get_multimodal_features(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **media: torch.Tensor | None,
    ) -> dict[str, BaseModelOutputWithPooling]:
        """Images, videos and regions of a batch encoded in ONE vision-encoder call.

        Args:
            media: inputs named in `MEDIA_INPUT_NAMES` (see `forward`); `None` values are ignored.
        Returns:
            Per modality present (`"image"`, `"video"`, `"region"`), its LLM embeddings as `pooler_output`: one
            tensor per image, per video (after token compression) and per region, in placeholder order.
        """
        unknown = set(media) - set(MEDIA_INPUT_NAMES)
        if unknown:
            raise TypeError(f"Unknown media inputs {sorted(unknown)}; the model reads {', '.join(MEDIA_INPUT_NAMES)}.")
        media = {name: value for name, value in media.items() if value is not None}
        groups = self._vision_groups(media)
        if not groups:
            return {}
        features = dict(zip(groups, self.encode_vision(list(groups.values()))))
        outputs = {}
        if "image" in features:
            outputs["image"] = self._project_media(features["image"], *groups["image"][1:])
        if "video" in features:
            outputs["video"] = self._compressed_video(features["video"], media)
        if "region" in features:
            outputs["region"] = self._region_outputs(features, media, input_ids, inputs_embeds)
        return outputs

    def _vision_groups(self, media: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, ...]]:
        """The `(pixel_values, grid_thw, merge_sizes)` of each group of images the vision encoder sees."""
        groups = {}
        if "pixel_values" in media:
            groups["image"] = tuple(media[name] for name in IMAGE_INPUT_NAMES)
        if "pixel_values_videos" in media:
            groups["video"] = tuple(media[name] for name in VIDEO_INPUT_NAMES[:3])
        if "region_pixel_values" in media:
            grid = media["region_grid_thw"]
            groups["region"] = (media["region_pixel_values"], grid, torch.ones_like(grid[:, 0]))
        if "region_pixel_values" in media and self.config.object_only:
            if "region_context_pixel_values" not in media or "region_view_ids" not in media:
                raise ValueError(
                    "PixelRefer-Lite needs each region's context views (region_context_pixel_values, "
                    "region_context_grid_thw, region_view_ids); build the inputs with this checkpoint's processor, "
                    "which has object_only=True."
                )
            grid = media["region_context_grid_thw"]
            groups["context"] = (media["region_context_pixel_values"], grid, torch.ones_like(grid[:, 0]))
        return groups

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

    def _compressed_video(self, features: torch.Tensor, media: dict[str, torch.Tensor]) -> BaseModelOutputWithPooling:
        """Video embeddings, one tensor per video, without the tokens `video_compression_mask` drops."""
        video = self._project_media(features, media["video_grid_thw"], media["video_merge_sizes"])
        if "video_compression_mask" in media:
            keep = media["video_compression_mask"].to(features.device).split([len(e) for e in video.pooler_output])
            video.pooler_output = tuple(embeds[kept] for embeds, kept in zip(video.pooler_output, keep))
        return video

    def _region_outputs(
        self,
        features: dict[str, torch.Tensor],
        media: dict[str, torch.Tensor],
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor | None,
    ) -> BaseModelOutputWithPooling:
        """Object tokens, one tensor per region, from the encoded crops (and Lite's encoded context views)."""
        tokens_per_region = self.tokens_per_region(media["region_masks"], media["region_mask_hw"])
        view_ids = None
        if self.config.object_only:
            if input_ids is None and inputs_embeds is None:
                sample_ids = torch.zeros_like(tokens_per_region)
            else:
                placeholders = self.placeholder_mask(input_ids, inputs_embeds, self.config.region_token_id)
                sample_ids = region_sample_ids(placeholders, tokens_per_region)
            num_images = len(media["region_context_grid_thw"]) // 2
            view_ids = global_view_ids(media["region_view_ids"].to(sample_ids.device), sample_ids, num_images)
        tokens = self.object_tokens(
            features["region"],
            *(media[name] for name in REGION_INPUT_NAMES[1:5]),
            region_kmeans_init=media.get("region_kmeans_init"),
            context_features=features.get("context"),
            region_context_grid_thw=media.get("region_context_grid_thw"),
            view_ids=view_ids,
        )
        return BaseModelOutputWithPooling(
            last_hidden_state=features["region"], pooler_output=tokens.split(tokens_per_region.tolist())
        )

    def object_tokens(
        self,
        crop_features: torch.Tensor,
        region_grid_thw: torch.LongTensor,
        region_masks: torch.Tensor,
        region_mask_hw: torch.LongTensor,
        region_boxes: torch.Tensor,
        region_kmeans_init: torch.LongTensor | None = None,
        context_features: torch.Tensor | None = None,
        region_context_grid_thw: torch.LongTensor | None = None,
        view_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Object tokens of all regions from their encoded crops (and Lite context views), in region order.

        Args:
            crop_features: `(sum(h_i * w_i), C)` vision features of the crops.
            region_grid_thw, region_masks, region_mask_hw, region_boxes, region_kmeans_init: as in `forward`.
            context_features: Lite only, `(sum(n_v), C)` features of the context views (global, local per image).
            region_context_grid_thw: Lite only, `(2 * I, 3)` grids of the views of the I context images.
            view_ids: Lite only, `(R,)` index of each region's context image among the I images of the batch.
        Returns:
            `(sum(tokens_i), D)` object tokens: `tokens_i = min(max_object_tokens, masked cells)` for the full
            model, always `max_object_tokens` (zero padded before infusion) for Lite.
        """
        masked = self.object_tokenizer.masked_cells(
            crop_features, region_grid_thw[:, 1:], region_masks, region_mask_hw, region_boxes
        )
        pooled = self.object_tokenizer.pool(masked, initial_indices=region_kmeans_init)
        if self.object_infusion is None:
            valid = torch.arange(pooled.tokens.shape[1], device=pooled.counts.device) < pooled.counts[:, None]
            return self.object_tokenizer(pooled.tokens[valid])
        views = list(context_features.split(region_context_grid_thw.prod(-1).tolist()))
        global_context, global_padding = _pad_views(views[0::2])
        local_context, local_padding = _pad_views(views[1::2])
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
        """`(R,)` object tokens of each region: `min(max_object_tokens, masked cells)`, always the maximum for Lite."""
        if self.config.object_only:
            return torch.full((len(region_mask_hw),), self.config.max_object_tokens, device=region_mask_hw.device)
        cells = region_mask_hw.prod(-1)
        region = torch.repeat_interleave(torch.arange(len(cells), device=cells.device), cells)
        masked = torch.zeros_like(cells).index_add_(0, region, (region_masks.to(cells.device) > 0).long())
        return masked.clamp(max=self.config.max_object_tokens)

    def placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None, token_id: int
    ) -> torch.BoolTensor:
        """`(batch_size, sequence_length)` True at the positions of placeholder `token_id`."""
        if input_ids is not None:
            return input_ids == token_id
        token = torch.full((), token_id, dtype=torch.long, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    def merge_multimodal_embeddings(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        encoded: dict[str, BaseModelOutputWithPooling],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Writes each modality's features into its placeholder positions of `inputs_embeds` `(B, L, D)`.

        Returns:
            The merged embeddings and, per modality present, its features `(n, D)` concatenated.
        """
        hidden = {}
        for modality in MODALITIES:
            if encoded.get(modality) is None:
                continue
            features = torch.cat(list(encoded[modality].pooler_output))
            token_id = getattr(self.config, f"{modality}_token_id")
            placeholders = self.placeholder_mask(input_ids, inputs_embeds, token_id)
            inputs_embeds = _scatter(inputs_embeds, placeholders, features, PLACEHOLDER_NAMES[modality])
            hidden[modality] = features
        return inputs_embeds, hidden

    @can_return_tuple
    @add_start_docstrings_to_model_forward(PIXELREFER_INPUTS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
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
        region_context_pixel_values: torch.Tensor | None = None,
        region_context_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
        region_kmeans_init: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | PixelReferModelOutputWithPast:
        media = {name: value for name, value in locals().items() if name in MEDIA_INPUT_NAMES}
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        encoded = {**(mm_encoder_outputs or {}), **self.get_multimodal_features(input_ids, inputs_embeds, **media)}
        inputs_embeds, hidden = self.merge_multimodal_embeddings(input_ids, inputs_embeds, encoded)
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **kwargs,
        )
        return PixelReferModelOutputWithPast(
            **outputs, **{f"{modality}_hidden_states": features for modality, features in hidden.items()}
        )


class PixelReferForConditionalGeneration(PixelReferPreTrainedModel, VideoLlama3ForConditionalGeneration):
    def __init__(self, config: PixelReferConfig):
        PixelReferPreTrainedModel.__init__(self, config)
        self.model = PixelReferModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_region_features(self, **kwargs) -> BaseModelOutputWithPooling:
        """See [`PixelReferModel.get_region_features`]."""
        return self.model.get_region_features(**kwargs)

    def get_multimodal_features(self, **kwargs) -> dict[str, BaseModelOutputWithPooling]:
        """See [`PixelReferModel.get_multimodal_features`]."""
        return self.model.get_multimodal_features(**kwargs)

    @can_return_tuple
    @add_start_docstrings_to_model_forward(PIXELREFER_INPUTS_DOCSTRING + LM_INPUTS_DOCSTRING)
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
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
        region_context_pixel_values: torch.Tensor | None = None,
        region_context_grid_thw: torch.LongTensor | None = None,
        region_view_ids: torch.LongTensor | None = None,
        region_kmeans_init: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | PixelReferCausalLMOutputWithPast:
        model_inputs = {name: value for name, value in locals().items() if name in MODEL_INPUT_NAMES}
        outputs = self.model(**model_inputs, return_dict=True, **kwargs)
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        hidden = {name: value for name, value in outputs.items() if name != "last_hidden_state"}
        return PixelReferCausalLMOutputWithPast(loss=loss, logits=logits, **hidden)

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
]
