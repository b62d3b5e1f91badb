"""PixelRefer configuration: VideoLLaMA3 plus the settings of the region (object) path."""

from huggingface_hub.dataclasses import strict
from transformers import VideoLlama3Config


@strict
class PixelReferConfig(VideoLlama3Config):
    r"""
    Configuration of [`PixelReferForConditionalGeneration`]. Everything of [`VideoLlama3Config`] (vision encoder,
    Qwen2 text model, image/video token ids) plus:

    max_object_tokens (`int`, *optional*, defaults to 32):
        Maximum number of object tokens one region becomes (the original's `mask_num`, still accepted as an alias).
        Masked patch features are clustered down to this many tokens when the region covers more cells.
    region_token_id (`int`, *optional*, defaults to 151668):
        Id of the `<REGION>` placeholder token that the object tokens replace.
    object_only (`bool`, *optional*, defaults to `False`):
        `True` for PixelRefer-Lite (Object-Only): no image or video tokens reach the LLM; object tokens are first
        fused with local and global image features by Object-Centric Infusion.
    kmeans_iterations (`int`, *optional*):
        Iterations of the k-means clustering of object features; defaults to the original's, 5 for the full model
        and 3 for Lite.
    infusion_num_heads (`int`, *optional*, defaults to 8):
        Attention heads of the Object-Centric Infusion cross-attention (Lite only; the original's `oci_num_heads`,
        still accepted as an alias).
    use_token_compression (`bool`, *optional*, defaults to `True`):
        Drop video tokens that barely change from the previous frame (full variant, videos only).
    round_pixels_to_bfloat16 (`bool`, *optional*):
        Round the vision encoder's input pixels through bfloat16, whatever the model's dtype; defaults to
        `object_only`, since the Lite release always feeds its encoder bfloat16 pixels (and the full release does not).

    Example:

    ```python
    >>> from pixelrefer_hf import PixelReferConfig, PixelReferForConditionalGeneration
    >>> config = PixelReferConfig(max_object_tokens=32)
    >>> model = PixelReferForConditionalGeneration(config)
    ```
    """

    model_type = "pixelrefer"
    # Names of the original release (and of configs saved before the rename) keep loading.
    attribute_map = {"mask_num": "max_object_tokens", "oci_num_heads": "infusion_num_heads"}

    image_token_id: int = 151665
    max_object_tokens: int = 32
    region_token_id: int = 151668
    object_only: bool = False
    kmeans_iterations: int | None = None
    infusion_num_heads: int = 8
    use_token_compression: bool = True
    round_pixels_to_bfloat16: bool | None = None

    def __post_init__(self, **kwargs):
        # The one place where PixelRefer-Lite's settings differ from the full model's.
        if self.kmeans_iterations is None:
            self.kmeans_iterations = 3 if self.object_only else 5
        if self.round_pixels_to_bfloat16 is None:
            self.round_pixels_to_bfloat16 = self.object_only
        super().__post_init__(**kwargs)


__all__ = ["PixelReferConfig"]
