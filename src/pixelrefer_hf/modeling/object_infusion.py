"""OCI, Object-Centric Infusion (PixelRefer-Lite): object tokens take in their image context before the LLM.

Each region's tokens cross-attend first to the features of a local view (the object's surroundings), then to those
of a global view (the whole image); each step normalises the query only and adds the result back (residual).
"""

import torch
from torch import nn

from .configuration_pixelrefer import PixelReferConfig


class PixelReferObjectInfusion(nn.Module):
    def __init__(self, config: PixelReferConfig):
        super().__init__()
        hidden_size = config.vision_config.hidden_size
        self.local_norm = nn.LayerNorm(hidden_size)
        self.local_attention = nn.MultiheadAttention(hidden_size, config.infusion_num_heads, batch_first=True)
        self.global_norm = nn.LayerNorm(hidden_size)
        self.global_attention = nn.MultiheadAttention(hidden_size, config.infusion_num_heads, batch_first=True)

    def forward(
        self,
        objects: torch.Tensor,
        local_context: torch.Tensor,
        global_context: torch.Tensor,
        local_padding: torch.BoolTensor | None = None,
        global_padding: torch.BoolTensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            objects: `(R, T, C)` pooled object tokens of R regions (zero rows where a region has fewer tokens).
            local_context: `(R, L, C)` features of each region's local view.
            global_context: `(R, G, C)` features of each region's global view.
            local_padding, global_padding: `(R, L)` / `(R, G)`, True on padded context positions, or None.
        Returns:
            `(R, T, C)` object tokens with their context infused.
        """
        objects = self._attend(self.local_norm, self.local_attention, objects, local_context, local_padding)
        return self._attend(self.global_norm, self.global_attention, objects, global_context, global_padding)

    @staticmethod
    def _attend(
        norm: nn.LayerNorm,
        attention: nn.MultiheadAttention,
        objects: torch.Tensor,
        context: torch.Tensor,
        padding: torch.BoolTensor | None,
    ) -> torch.Tensor:
        """`objects + attention(norm(objects), context, context)`: the query alone is normalised."""
        query = norm(objects)
        return objects + attention(query, context, context, key_padding_mask=padding, need_weights=False)[0]


__all__ = ["PixelReferObjectInfusion"]
