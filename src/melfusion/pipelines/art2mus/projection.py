"""Art2Mus's Image Projection Layer: an image embedding → N tokens in GPT-2's input space (paper Fig. 2).

Linear(D → H) → Tanh → Linear(H → N·L), reshaped to (B, N, L). Paper: D = 1024 (ImageBind-huge),
H = 1536 (2·768), L = 768 (GPT-2), N = 1 (Art2Mus) or 4 (Art2Mus-4). The only new weights of Art2Mus.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class ImageProjectionLayer(ModelMixin, ConfigMixin):
    """(B, image_embed_dim) → (B, num_tokens, language_model_dim)."""

    @register_to_config
    def __init__(
        self,
        image_embed_dim: int = 1024,
        language_model_dim: int = 768,
        num_tokens: int = 1,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        hidden = int(hidden_dim or 2 * language_model_dim)
        self.projection1 = nn.Linear(image_embed_dim, hidden)
        self.act = nn.Tanh()
        self.projection2 = nn.Linear(hidden, num_tokens * language_model_dim)

    @property
    def num_tokens(self) -> int:
        return int(self.config.num_tokens)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if image_embeds.dim() == 3 and image_embeds.shape[1] == 1:
            image_embeds = image_embeds[:, 0]  # (B, 1, D) → (B, D)
        if image_embeds.dim() != 2 or image_embeds.shape[-1] != self.config.image_embed_dim:
            raise ValueError(
                f"image embeddings must be (B, {self.config.image_embed_dim}), got {tuple(image_embeds.shape)}"
            )
        x = image_embeds.to(self.projection1.weight.dtype)
        x = self.projection2(self.act(self.projection1(x)))  # (B, N·L)
        return x.view(x.shape[0], self.config.num_tokens, self.config.language_model_dim)  # (B, N, L)
