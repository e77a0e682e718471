"""Builders for checkpoints in their ORIGINAL layouts, independent of melfusion.convert.

`RefAutoencoderKL`, `RefGenerator`, `RefTacotronSTFT` and `RefAudioDiffusion` re-create the module trees
of the original code, so `state_dict()` yields TANGO's own key names:

- audioldm/variational_autoencoder/{autoencoder,modules}.py (AutoencoderKL: encoder, decoder,
  quant_conv, post_quant_conv, vocoder; Encoder/Decoder with `down[i].block[j]`, `down[i].downsample`,
  `mid.block_1/attn_1/block_2`, `up[i]` stored bottom-up, `norm_out`, `conv_out`; ResnetBlock with
  norm1/conv1/norm2/conv2/nin_shortcut and temb_channels=0; AttnBlock with norm/q/k/v/proj_out 1x1 convs)
- audioldm/hifigan/models.py (Generator: conv_pre, ups, resblocks[i].convs1/convs2, conv_post; weight
  norm removed by get_vocoder before TANGO saved it)
- audioldm/audio/stft.py (TacotronSTFT: stft_fn.forward_basis, stft_fn.inverse_basis, mel_basis)
- tango models.py (AudioDiffusion: `unet` = diffusers UNet2DConditionModel, `text_encoder` = T5EncoderModel)

Their forward passes follow the originals too, so tests compare outputs, not only names.
Widths are reduced; structure and config keys are the real ones.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------
# real configs with reduced widths
# ---------------------------------------------------------------------------------------------------
TINY_UNET_CONFIG = {  # configs/diffusion_model_config.json of declare-lab/tango, narrowed
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.10.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": [2, 4, 4, 4],
    "block_out_channels": [32, 64, 64, 64],
    "center_input_sample": False,
    "cross_attention_dim": 32,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 8,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 8,
    "sample_size": [32, 2],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
    "upcast_attention": True,
}

MAIN_CONFIG = {
    "text_encoder_name": "google/flan-t5-large",
    "scheduler_name": "stabilityai/stable-diffusion-2-1",
    "unet_model_name": None,
    "unet_model_config_path": "configs/diffusion_model_config.json",
    "snr_gamma": None,
}

STFT_CONFIG = {  # the real AudioLDM-S values
    "filter_length": 1024,
    "hop_length": 160,
    "win_length": 1024,
    "n_mel_channels": 64,
    "sampling_rate": 16000,
    "mel_fmin": 0,
    "mel_fmax": 8000,
}

SCALE_FACTOR = 0.9227914214134216

VAE_CONFIG = {  # audioldm first_stage_config params + scale_factor, ch 128 -> 32, num_res_blocks 2 -> 1
    "image_key": "fbank",
    "subband": 1,
    "embed_dim": 8,
    "time_shuffle": 1,
    "ddconfig": {
        "double_z": True,
        "z_channels": 8,
        "resolution": 256,
        "downsample_time": False,
        "in_channels": 1,
        "out_ch": 1,
        "ch": 32,
        "ch_mult": [1, 2, 4],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
    "scale_factor": SCALE_FACTOR,
}

HIFIGAN = {  # audioldm/hifigan/utilities.py HIFIGAN_16K_64, upsample_initial_channel 1024 -> 32
    "num_mels": 64,
    "upsample_rates": [5, 4, 2, 2, 2],
    "upsample_kernel_sizes": [16, 16, 8, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}

T5_WIDTH = 32


# ---------------------------------------------------------------------------------------------------
# AudioLDM VAE (variational_autoencoder/modules.py)
# ---------------------------------------------------------------------------------------------------
def _group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class RefResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = _group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = _group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class RefAttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, -1).transpose(1, 2)  # (B, HW, C)
        k = self.k(h).reshape(b, c, -1)  # (B, C, HW)
        v = self.v(h).reshape(b, c, -1)
        w = torch.softmax(q @ k * c**-0.5, dim=-1)  # (B, HW, HW)
        out = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class RefDownsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class RefUpsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(c: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = RefResnetBlock(c, c)
    mid.attn_1 = RefAttnBlock(c)
    mid.block_2 = RefResnetBlock(c, c)
    return mid


class RefEncoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, in_channels, z_channels, **_):
        super().__init__()
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList(
                RefResnetBlock(ch * (in_mult[i] if j == 0 else mult), ch * mult)
                for j in range(num_res_blocks)
            )
            level.attn = nn.ModuleList()  # attn_resolutions = []
            if i != len(ch_mult) - 1:
                level.downsample = RefDownsample(ch * mult)
            self.down.append(level)
        c = ch * ch_mult[-1]
        self.mid = _mid(c)
        self.norm_out = _group_norm(c)
        self.conv_out = nn.Conv2d(c, 2 * z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class RefDecoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, out_ch, z_channels, **_):
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, 1, 1)
        self.mid = _mid(c)
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch_mult))):
            level = nn.Module()
            blocks = []
            for _j in range(num_res_blocks + 1):
                blocks.append(RefResnetBlock(c, ch * ch_mult[i]))
                c = ch * ch_mult[i]
            level.block = nn.ModuleList(blocks)
            level.attn = nn.ModuleList()
            if i != 0:
                level.upsample = RefUpsample(c)
            self.up.insert(0, level)  # stored bottom-up: up[0] is the highest resolution
        self.norm_out = _group_norm(c)
        self.conv_out = nn.Conv2d(c, out_ch, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i in reversed(range(len(self.up))):
            for block in self.up[i].block:
                h = block(h)
            if hasattr(self.up[i], "upsample"):
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------------
# AudioLDM HiFi-GAN (hifigan/models.py, after remove_weight_norm)
# ---------------------------------------------------------------------------------------------------
def _pad(k: int, d: int = 1) -> int:
    return (k * d - d) // 2


class RefResBlock(nn.Module):
    def __init__(self, c: int, k: int, dilations):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(c, c, k, 1, dilation=d, padding=_pad(k, d)) for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(c, c, k, 1, dilation=1, padding=_pad(k)) for _ in dilations)

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1))
        return x


class RefGenerator(nn.Module):
    def __init__(self, h: dict):
        super().__init__()
        c0 = h["upsample_initial_channel"]
        self.num_kernels = len(h["resblock_kernel_sizes"])
        self.conv_pre = nn.Conv1d(h["num_mels"], c0, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"]))
        )
        self.resblocks = nn.ModuleList(
            RefResBlock(c0 // 2 ** (i + 1), k, d)
            for i in range(len(self.ups))
            for k, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"])
        )
        self.conv_post = nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, 1, padding=3)

    def forward(self, mel):  # (B, n_mels, T) -> (B, 1, T * hop)
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            xs = sum(self.resblocks[i * self.num_kernels + j](x) for j in range(self.num_kernels))
            x = xs / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class RefAutoencoderKL(nn.Module):
    def __init__(self, ddconfig: dict, embed_dim: int, scale_factor: float = 1.0, **_):
        super().__init__()
        self.encoder = RefEncoder(**ddconfig)
        self.decoder = RefDecoder(**ddconfig)
        self.quant_conv = nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.vocoder = RefGenerator(HIFIGAN)
        self.scale_factor = scale_factor  # a plain attribute, not in the state dict

    def encode_moments(self, fbank):  # (B, 1, T, M) -> (B, 2 * embed_dim, T / 4, M / 4)
        return self.quant_conv(self.encoder(fbank))

    def decode_first_stage(self, z):  # scaled latent -> mel (B, 1, T, M)
        return self.decoder(self.post_quant_conv(z / self.scale_factor))

    def decode_to_waveform(self, mel):  # (B, 1, T, M) -> (B, T * hop)
        return self.vocoder(mel.squeeze(1).permute(0, 2, 1)).squeeze(1)


class RefSTFT(nn.Module):
    def __init__(self, filter_length: int):
        super().__init__()
        n = filter_length // 2 + 1
        self.register_buffer("forward_basis", torch.randn(2 * n, 1, filter_length))
        self.register_buffer("inverse_basis", torch.randn(2 * n, 1, filter_length))


class RefTacotronSTFT(nn.Module):
    def __init__(
        self, filter_length, hop_length, win_length, n_mel_channels, sampling_rate, mel_fmin, mel_fmax
    ):
        super().__init__()
        self.stft_fn = RefSTFT(filter_length)
        self.register_buffer("mel_basis", torch.rand(n_mel_channels, filter_length // 2 + 1))


class RefAudioDiffusion(nn.Module):
    """tango models.py AudioDiffusion with unet_model_config_path set (UNet initialised from a config)."""

    def __init__(self, unet_config: dict, text_encoder):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel.from_config(unet_config)
        self.text_encoder = text_encoder


# ---------------------------------------------------------------------------------------------------
# tokenizers and text encoders built offline
# ---------------------------------------------------------------------------------------------------
WORDS = [
    "a",
    "the",
    "of",
    "and",
    "with",
    "music",
    "song",
    "calm",
    "happy",
    "sad",
    "slow",
    "fast",
    "piano",
    "guitar",
    "drums",
    "strings",
    "bright",
    "dark",
]


def build_t5_tokenizer(model_max_length: int = 32):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"\u2581{w}", -1.0 - i) for i, w in enumerate(WORDS)]
    vocab += [(c, -20.0) for c in "\u2581abcdefghijklmnopqrstuvwxyz"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=model_max_length,
    )


def build_t5(seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=64,
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config).eval()


def write_t5_folder(path: Path, seed: int = 1) -> Path:
    """A local stand-in for google/flan-t5-large: config.json, weights, tokenizer files."""
    build_t5(seed).save_pretrained(path)
    build_t5_tokenizer().save_pretrained(path)
    return path


def build_clip_tokenizer(path: Path):
    """A CLIP BPE tokenizer from a tiny vocab/merges written here."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    merges = ["a r", "ar t</w>"]
    vocab["ar"] = len(vocab)
    vocab["art</w>"] = len(vocab)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    params = inspect.signature(CLIPTokenizer.__init__).parameters
    if "vocab_file" in params:  # transformers 4.x
        return CLIPTokenizer(
            vocab_file=str(path / "vocab.json"), merges_file=str(path / "merges.txt"), model_max_length=16
        )
    # transformers 5; model_max_length = the text encoder's positions, as SD's 77
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges], model_max_length=16)


# ---------------------------------------------------------------------------------------------------
# whole folders
# ---------------------------------------------------------------------------------------------------
def build_tango_modules(seed: int = 0):
    torch.manual_seed(seed)
    vae = RefAutoencoderKL(**VAE_CONFIG).eval()
    stft = RefTacotronSTFT(**STFT_CONFIG)
    model = RefAudioDiffusion(TINY_UNET_CONFIG, build_t5(seed + 100)).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for module in (vae, model):
            for name, p in module.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    p.add_(0.1 * torch.randn_like(p))
    return vae, stft, model


def write_tango_folder(path: Path, seed: int = 0):
    """A TANGO checkpoint folder (declare-lab layout) + the modules it was saved from."""
    vae, stft, model = build_tango_modules(seed)
    path.mkdir(parents=True, exist_ok=True)
    (path / "main_config.json").write_text(json.dumps(MAIN_CONFIG, indent=1))
    (path / "vae_config.json").write_text(json.dumps(VAE_CONFIG, indent=1))
    (path / "stft_config.json").write_text(json.dumps(STFT_CONFIG, indent=1))
    (path / "configs").mkdir(exist_ok=True)
    (path / "configs" / "diffusion_model_config.json").write_text(json.dumps(TINY_UNET_CONFIG, indent=1))
    torch.save(vae.state_dict(), path / "pytorch_model_vae.bin")
    torch.save(stft.state_dict(), path / "pytorch_model_stft.bin")
    torch.save(model.state_dict(), path / "pytorch_model_main.bin")
    return vae, stft, model


def write_sd_folder(path: Path, seed: int = 0, scheduler: str = "pndm", layers_per_block: int = 1) -> dict:
    """A tiny diffusers Stable Diffusion folder written by StableDiffusionPipeline.save_pretrained."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64, 64),
        layers_per_block=layers_per_block,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4, 4, 4),
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[32, 32],
        latent_channels=4,
        layers_per_block=1,
    )
    sched_kwargs = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    if scheduler == "pndm":  # SD 1.5's
        sched = PNDMScheduler(**sched_kwargs, skip_prk_steps=True, set_alpha_to_one=False)
    else:  # SD 2.1's
        sched = DDIMScheduler(
            **sched_kwargs, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction"
        )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    tokenizer = build_clip_tokenizer(path.parent / f"{path.name}_clip_vocab")
    components = dict(unet=unet, vae=vae, scheduler=sched, text_encoder=text_encoder, tokenizer=tokenizer)
    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return components


def linked_copy(src: Path, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    """dst with symlinks to every top-level entry of src except `skip` (cheap per-test variants)."""
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name not in skip:
            (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return dst
