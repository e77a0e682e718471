"""The visual synapse (MeLFusion §3.2, Eq. 5–6).

In every decoder cross-attention (``attn2``) layer l of the music UNet the text keys/values are mixed with
the self-attention (``attn1``) keys/values K^I_l, V^I_l of the frozen image LDM's decoder layer l:

    K^M_l <- α_l K^I_l + (1 - α_l) K^M_l        (Eq. 5)
    V^M_l <- α_l V^I_l + (1 - α_l) V^M_l        (Eq. 6)

K^I has h·w tokens, K^M has S text tokens: K^I is resampled along the token axis by adaptive average
pooling onto the valid (unmasked) text positions of each row. α_l = (2·sigmoid(a_l) − 1)/ρ with a_l = 0 at
init (the authors' parameterisation), so a freshly installed synapse leaves the music UNet unchanged.

Option, not in the paper (``image_projection=True``, off by default): a learned per-layer linear map on
K^I and V^I before the mix, initialised to the identity (so it starts as exactly Eq. 5–6). In the paper the
frozen image features enter the music UNet's key/value space raw; only α and the layers after the mix can
adapt to them, whereas the text enters through the trainable ``to_k``/``to_v``. The map gives the image the
same kind of trainable entry.

Option, not in the paper (``image_timestep=t_I``, default None): read the image features at one fixed image
timestep for every music timestep instead of at the music step's own t (Alg. 1 line 7, Alg. 2). The linear
direction that carries mood in K^I/V^I changes with t (a readout fitted at t = 50–600 is at or below chance at
t = 900–990 on the synthetic corpus), so what the music UNet learns where the loss pays (mid t) does not carry
over to the high-noise steps where sampling fixes the rhythm. A fixed t_I keeps one readout valid throughout.

Everything goes through diffusers attention processors; nothing in diffusers is patched. The features of one
UNet forward travel in ``cross_attention_kwargs["visual_features"]`` (a :class:`SynapseFeatures`, built by
:meth:`VisualSynapse.attention_kwargs`); the processors keep no state between calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from melfusion.models.attention_processor import (
    VISUAL_FEATURES,
    KVHookAttnProcessor,
    accepts_visual_features,
    attention_with_kv_hook,
)


def decoder_attention_names(unet: UNet2DConditionModel, which: str) -> list[str]:
    """Processor names of the decoder (``up_blocks``) attention layers of one kind, in forward order.

    ``which`` is ``"attn1"`` (self-attention) or ``"attn2"`` (cross-attention). The order of
    ``unet.attn_processors`` follows module registration, i.e. up_blocks[i].attentions[j]
    .transformer_blocks[k], which is the order the decoder runs them."""
    if which not in ("attn1", "attn2"):
        raise ValueError(f"which must be 'attn1' or 'attn2', got {which!r}")
    return [
        name
        for name in unet.attn_processors
        if name.startswith("up_blocks.") and name.endswith(f".{which}.processor")
    ]


def _module_for(unet: torch.nn.Module, processor_name: str) -> Attention:
    return unet.get_submodule(processor_name.removesuffix(".processor"))


def decoder_layer_widths(unet: UNet2DConditionModel, which: str) -> list[int]:
    """Inner K/V width (to_k output features) of each decoder attention layer."""
    return [_module_for(unet, n).to_k.out_features for n in decoder_attention_names(unet, which)]


class SynapseMismatchError(ValueError):
    """The image LDM and the music LDM cannot be wired layer for layer."""


class SynapseNotInstalledError(RuntimeError):
    """The music UNet no longer runs the synapse's processors (something replaced them)."""


@dataclass(frozen=True)
class SynapseFeatures:
    """The image features of one music UNet forward (``cross_attention_kwargs["visual_features"]``).

    kv: per decoder layer (K, V), each (B_img, N_l, C_l). image_index: (B,) long, the image row of each row of
    the UNet batch, -1 = no image (e.g. an unconditional CFG branch). text_mask: (B, S) bool valid-token mask,
    or None (then read off the UNet's attention bias)."""

    kv: Sequence[tuple[torch.Tensor, torch.Tensor]]
    image_index: torch.Tensor
    text_mask: torch.Tensor | None = None


class SynapseAttnProcessor:
    """Processor for decoder cross-attention layer ``layer`` of the music UNet (paper Eq. 5–6). Stateless: the
    image features arrive with each call; α and the optional projection are read from ``synapse``."""

    def __init__(self, synapse: VisualSynapse, layer: int):
        self.synapse = synapse
        self.layer = layer

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        visual_features: SynapseFeatures | None = None,
    ) -> torch.Tensor:
        if visual_features is None:
            return attention_with_kv_hook(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

        def mix(key, value, mask_bias):
            return self._mix(visual_features, key, value, mask_bias)

        return attention_with_kv_hook(attn, hidden_states, encoder_hidden_states, attention_mask, temb, mix)

    def _mix(
        self, feats: SynapseFeatures, key: torch.Tensor, value: torch.Tensor, mask_bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq, width = key.shape
        if feats.image_index.shape[0] != batch:
            raise ValueError(
                f"visual synapse: image_index has {feats.image_index.shape[0]} rows but the UNet batch has "
                f"{batch}; the features must describe every row of the batch"
            )
        valid = feats.text_mask
        if valid is None and mask_bias is not None:
            valid = mask_bias.reshape(batch, -1, seq)[:, 0, :] > -1.0  # UNet bias: 0 valid, -10000 masked
        if valid is None:
            valid = torch.ones(batch, seq, dtype=torch.bool, device=key.device)
        k_img, v_img = feats.kv[self.layer]
        if k_img.shape[-1] != width:
            raise SynapseMismatchError(
                f"decoder cross-attention layer {self.layer} of the music UNet is {width} wide but the captured "
                f"image self-attention features are {k_img.shape[-1]} wide"
            )
        has_image = feats.image_index >= 0  # (B,)
        k_pool = pool_tokens_to_mask(k_img, feats.image_index, valid)  # (B, S, C)
        v_pool = pool_tokens_to_mask(v_img, feats.image_index, valid)
        # The map is affine and the pooling averages, so mapping the S pooled tokens equals pooling the N
        # mapped ones (N = h·w ≫ S); masked positions stay zero as without the map.
        k_pool, v_pool = self.synapse.project(self.layer, k_pool, v_pool)
        if self.synapse.image_k_proj is not None:
            keep = valid.unsqueeze(-1)
            k_pool, v_pool = k_pool * keep, v_pool * keep
        alpha = self.synapse.alpha(self.layer).to(key.dtype)
        sel = has_image.view(batch, 1, 1)
        key = torch.where(sel, alpha * k_pool.to(key.dtype) + (1 - alpha) * key, key)  # Eq. 5
        value = torch.where(sel, alpha * v_pool.to(value.dtype) + (1 - alpha) * value, value)  # Eq. 6
        return key, value


def pool_tokens_to_mask(tokens: torch.Tensor, image_index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Resample image tokens onto each row's valid text positions.

    tokens (B_img, N, C); image_index (B,) with -1 for rows without an image; valid (B, S) bool.
    Returns (B, S, C): row b holds adaptive-avg-pool(tokens[image_index[b]], L_b) at its L_b valid
    positions (in order) and zeros elsewhere. Each distinct (image, L) is pooled once: CFG branches and
    samples that share an image and a prompt length share one pooling."""
    batch, seq = valid.shape
    out = tokens.new_zeros(batch, seq, tokens.shape[-1])
    lengths = valid.sum(dim=1)
    use = (image_index >= 0) & (lengths > 0)
    if not bool(use.any()):
        return out
    pairs = torch.stack([image_index, lengths], dim=1)[use]
    for img, length in torch.unique(pairs, dim=0).tolist():
        rows = torch.nonzero(use & (image_index == img) & (lengths == length), as_tuple=True)[0]
        pooled = F.adaptive_avg_pool1d(tokens[img].T.unsqueeze(0), length)[0].T  # (L, C)
        block = out[rows]
        block[valid[rows]] = pooled.repeat(rows.numel(), 1)
        out[rows] = block
    return out


class VisualSynapse(ModelMixin, ConfigMixin):
    """Learned per-layer mixing coefficients α and the wiring of image features into the music UNet.

    Args:
        layer_widths: inner width of each decoder cross-attention layer of the music UNet, in order
            (must equal the image UNet's decoder self-attention widths).
        layer_blocks: index of the up-block each layer lives in (for ``alpha_sharing="block"``).
        alpha_sharing: ``"layer"`` (one α per decoder attention layer, default), ``"block"`` (one per
            up-block) or ``"global"`` (a single α; paper Table 4's "same α for all blocks").
        rho: α = (2·sigmoid(a) − 1)/ρ, so |α| < 1/ρ.
        image_projection: a learned linear map per layer on K^I and V^I before the mix (identity at
            init; not in the paper, see the module doc).
        image_timestep: read the image features at this image timestep for every music timestep (not in the
            paper, see the module doc); None = the music step's own timestep (paper).
        image_inversion_grid: with ``image_timestep``, the ascending DDIM inversion grid the features were
            trained on (the trainer records it; inference inverts on the same grid). None: a 50-step DDIM grid
            with the music scheduler's spacing, the trainer's default before it was recorded.
        image_null_prompt_shape: shape (1, S, D) of the image LDM's stored null-prompt embedding ∅
            (``store_image_null_prompt``), so inference needs no image text encoder; None: not stored.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        layer_widths: list[int],
        layer_blocks: list[int] | None = None,
        alpha_sharing: str = "layer",
        rho: float = 5.0,
        image_projection: bool = False,
        image_timestep: int | None = None,
        image_inversion_grid: list[int] | None = None,
        image_null_prompt_shape: list[int] | None = None,
    ):
        super().__init__()
        if alpha_sharing not in ("layer", "block", "global"):
            raise ValueError(f"alpha_sharing must be 'layer', 'block' or 'global', got {alpha_sharing!r}")
        if rho <= 0:
            raise ValueError(f"rho must be > 0, got {rho}")
        if image_timestep is not None and image_timestep < 0:
            raise ValueError(f"image_timestep must be >= 0 or None, got {image_timestep}")
        if image_inversion_grid is not None and (
            not image_inversion_grid or list(image_inversion_grid) != sorted(set(image_inversion_grid))
        ):
            raise ValueError(f"image_inversion_grid must be ascending timesteps, got {image_inversion_grid}")
        n_layers = len(layer_widths)
        blocks = list(layer_blocks) if layer_blocks is not None else list(range(n_layers))
        if len(blocks) != n_layers:
            raise ValueError("layer_blocks must have one entry per layer")
        if alpha_sharing == "layer":
            index = list(range(n_layers))
        elif alpha_sharing == "block":
            uniq = sorted(set(blocks))
            index = [uniq.index(b) for b in blocks]
        else:
            index = [0] * n_layers
        self.register_buffer("alpha_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.alpha_logits = torch.nn.Parameter(torch.zeros(max(index) + 1 if index else 0))
        self.image_k_proj: torch.nn.ModuleList | None = None
        self.image_v_proj: torch.nn.ModuleList | None = None
        if image_projection:
            self.image_k_proj = torch.nn.ModuleList(_identity_linear(w) for w in layer_widths)
            self.image_v_proj = torch.nn.ModuleList(_identity_linear(w) for w in layer_widths)
        # (1, S, D) or None; a persistent buffer once stored (old folders have none)
        shape = image_null_prompt_shape
        self.register_buffer("image_null_prompt_embeds", torch.zeros(*shape) if shape is not None else None)

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_unets(
        cls,
        music_unet: UNet2DConditionModel,
        image_unet: UNet2DConditionModel,
        alpha_sharing: str = "layer",
        rho: float = 5.0,
    ) -> VisualSynapse:
        """Build a synapse (α = 0) for this pair of UNets, checking they match layer for layer."""
        music = decoder_layer_widths(music_unet, "attn2")
        image = decoder_layer_widths(image_unet, "attn1")
        check_compatible(music, image)
        blocks = [int(n.split(".")[1]) for n in decoder_attention_names(music_unet, "attn2")]
        return cls(layer_widths=music, layer_blocks=blocks, alpha_sharing=alpha_sharing, rho=rho)

    # -- α ----------------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.config.layer_widths)

    def alphas(self) -> torch.Tensor:
        """α per decoder layer, (L,)."""
        a = (2 * torch.sigmoid(self.alpha_logits) - 1) / self.config.rho
        return a[self.alpha_index]

    def alpha(self, layer: int) -> torch.Tensor:
        a = self.alpha_logits[self.alpha_index[layer]]
        return (2 * torch.sigmoid(a) - 1) / self.config.rho

    @torch.no_grad()
    def set_alphas(self, values: float | Sequence[float] | torch.Tensor) -> None:
        """Set α directly (inverts the parameterisation); |α| must be < 1/ρ."""
        n = self.alpha_logits.numel()
        target = torch.as_tensor(values, dtype=torch.float32).flatten()
        if target.numel() == 1:
            target = target.expand(n)
        if target.numel() != n:
            raise ValueError(f"expected {n} α values, got {target.numel()}")
        s = (target * self.config.rho + 1) / 2  # sigmoid(a)
        if bool(((s <= 0) | (s >= 1)).any()):
            raise ValueError(f"|α| must be < 1/rho = {1 / self.config.rho}")
        self.alpha_logits.copy_(torch.logit(s).to(self.alpha_logits))

    def image_timestep_for(self, timestep: torch.Tensor) -> torch.Tensor:
        """The image timestep(s) whose features go with music timestep(s) ``timestep`` (same shape)."""
        fixed = self.config.get("image_timestep")
        return timestep if fixed is None else torch.full_like(torch.as_tensor(timestep), int(fixed))

    # -- the image LDM's null prompt -------------------------------------------------------------------
    @torch.no_grad()
    def store_image_null_prompt(self, embeds: torch.Tensor) -> None:
        """Keep the image LDM's null-prompt embedding ∅ (1, S, D) with the model (saved in its weights)."""
        if embeds.dim() != 3 or embeds.shape[0] != 1:
            raise ValueError(f"the null-prompt embedding must be (1, S, D), got {tuple(embeds.shape)}")
        self.register_to_config(image_null_prompt_shape=list(embeds.shape))
        self.image_null_prompt_embeds = embeds.detach().to(torch.float32).clone()

    # -- image projection (option) -------------------------------------------------------------------
    def project(
        self, layer: int, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image keys/values (..., C) through layer ``layer``'s learned maps; unchanged without the option.
        The synapse applies them to the pooled (B, S, C) tokens, which equals mapping all N (affine map)."""
        if self.image_k_proj is None or self.image_v_proj is None:
            return key, value
        k_proj, v_proj = self.image_k_proj[layer], self.image_v_proj[layer]
        return k_proj(key.to(k_proj.weight.dtype)), v_proj(value.to(v_proj.weight.dtype))

    def projection_parameters(self) -> list[torch.nn.Parameter]:
        """The image projection's weights (empty without the option): trained like θ, not at α's rate."""
        return [p for name, p in self.named_parameters() if name != "alpha_logits"]

    # -- wiring -----------------------------------------------------------------------------------------
    def install(self, unet: UNet2DConditionModel) -> None:
        """Put a synapse processor on every decoder cross-attention layer of the music UNet, and on every
        other layer one that takes (and ignores) ``visual_features`` unless its processor already does."""
        names = decoder_attention_names(unet, "attn2")
        check_compatible(decoder_layer_widths(unet, "attn2"), list(self.config.layer_widths))
        procs = {
            name: proc if accepts_visual_features(proc) else KVHookAttnProcessor()
            for name, proc in unet.attn_processors.items()
        }
        for i, name in enumerate(names):
            procs[name] = SynapseAttnProcessor(self, i)
        unet.set_attn_processor(procs)

    @staticmethod
    def remove(unet: UNet2DConditionModel) -> None:
        """Restore diffusers' stock processors wherever ``install`` put its own."""
        procs = {
            name: AttnProcessor2_0() if isinstance(p, SynapseAttnProcessor | KVHookAttnProcessor) else p
            for name, p in unet.attn_processors.items()
        }
        unet.set_attn_processor(procs)

    @staticmethod
    def is_installed(unet: UNet2DConditionModel) -> bool:
        procs = unet.attn_processors
        return any(isinstance(procs[n], SynapseAttnProcessor) for n in decoder_attention_names(unet, "attn2"))

    def check_installed(self, unet: UNet2DConditionModel) -> None:
        """Raise :class:`SynapseNotInstalledError` (one line: the layer, the processor now there, the call that
        puts it there and the fix) unless this synapse's processors run every decoder cross-attention layer
        and every other layer takes ``visual_features``."""
        procs = unet.attn_processors
        decoder = decoder_attention_names(unet, "attn2")
        for i, name in enumerate(decoder):
            p = procs[name]
            if not (isinstance(p, SynapseAttnProcessor) and p.synapse is self and p.layer == i):
                raise SynapseNotInstalledError(_not_installed(name, p, "the image would be ignored"))
        for name, p in procs.items():
            if not accepts_visual_features(p):
                raise SynapseNotInstalledError(_not_installed(name, p, "it cannot take the image features"))

    def attention_kwargs(
        self,
        kv: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
        image_index: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> dict[str, SynapseFeatures]:
        """``cross_attention_kwargs`` entries for one music UNet forward: ``{"visual_features": ...}``, or {} for
        ``kv=None`` (no image: the UNet then behaves as text-only).

        kv: per decoder layer (K, V), each (B_img, N_l, C_l), from a :class:`VisualGuidance` step.
        image_index: (B,) long, the image row for each row of the music batch, -1 for none; default
            ``arange(B_img)``. text_mask: (B, S) bool valid-token mask (optional)."""
        if kv is None:
            return {}
        if len(kv) != self.num_layers:
            raise SynapseMismatchError(
                f"got features for {len(kv)} decoder layers, the synapse has {self.num_layers}"
            )
        if image_index is None:
            image_index = torch.arange(kv[0][0].shape[0], device=kv[0][0].device)
        mask = text_mask.bool() if text_mask is not None else None
        return {VISUAL_FEATURES: SynapseFeatures(kv, image_index.long(), mask)}


# processor class → the diffusers call that installs it (for the error when one replaced the synapse)
_INSTALLED_BY = {
    "XFormersAttnProcessor": "enable_xformers_memory_efficient_attention()",
    "SlicedAttnProcessor": "enable_attention_slicing() / set_attention_slice()",
    "FusedAttnProcessor2_0": "fuse_qkv_projections()",
    "AttnProcessor2_0": "set_default_attn_processor() or set_attn_processor()",
    "AttnProcessor": "set_default_attn_processor() or set_attn_processor()",
}


def _not_installed(name: str, processor: object, consequence: str) -> str:
    cls = type(processor).__name__
    if isinstance(processor, SynapseAttnProcessor):
        cause = "set_attn_processor() with another synapse's processors"
    else:
        cause = _INSTALLED_BY.get(cls, "set_attn_processor()")
    return (
        f"the visual synapse is not installed on {name.removesuffix('.processor')} ({cls}, put there by "
        f"{cause}), so {consequence}; call pipe.synapse.install(pipe.unet) afterwards (the synapse runs "
        "PyTorch's scaled-dot-product attention and needs no xformers or slicing)"
    )


def _identity_linear(width: int) -> torch.nn.Linear:
    layer = torch.nn.Linear(width, width)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
        layer.bias.zero_()
    return layer


def check_compatible(music_widths: Sequence[int], image_widths: Sequence[int]) -> None:
    """Raise :class:`SynapseMismatchError` unless the decoders match layer for layer."""
    if len(music_widths) != len(image_widths):
        raise SynapseMismatchError(
            f"the music UNet has {len(music_widths)} decoder cross-attention layers but the image UNet has "
            f"{len(image_widths)} decoder self-attention layers; the visual synapse maps them one to one, "
            "so use an image LDM with the same decoder layout (e.g. an SD-family UNet with a TANGO-family "
            "music UNet)"
        )
    bad = [(i, m, g) for i, (m, g) in enumerate(zip(music_widths, image_widths)) if m != g]
    if bad:
        i, m, g = bad[0]
        raise SynapseMismatchError(
            f"decoder layer {i}: music cross-attention is {m} wide, image self-attention is {g} wide "
            f"({len(bad)} mismatching layers); the two UNets' decoder widths must match layer for layer"
        )
