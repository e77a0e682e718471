"""Cost of MeLFusion sampling relative to text-only sampling with the same music UNet, same steps.

Prints, measured in one run (this machine is noisy; each figure is the best of --repeats):
  * ratio_1   = time(MeLFusion, 1 sample, image guidance computed from scratch incl. VAE encode + inversion)
                / time(text only, 1 sample)                                   target <= 1.6
  * ratio_4   = time(MeLFusion, 4 samples sharing one image, from scratch) / time(text only, 4 samples)
                (= the per-sample ratio)                                      target <= 1.15
  * the same with capture="inversion-lagged" (K/V recorded during the inversion pass: half the image UNet
    calls, not the training features), capture="reverse" (Algorithm 2's separate reverse pass) and with a
    warm guidance cache,
  * peak memory (CUDA: max allocated per phase; CPU: process peak RSS) and the size of the cached guidance,
  * fidelity of the "inversion-lagged" and "reverse" captures against "trajectory" (the default, what
    training feeds): cosine of the captured K/V and the change of the sampled music latent, next to the
    change caused by swapping the image (for scale).

Configs (random weights; both UNets have equal token counts per level, as TANGO 256×16 vs SD 64×64):
  default  full-width (320/640/1280/1280, TANGO/SD block layout and head counts, cross-attention 1024),
           1 layer per block, music latent 8×32×16 vs image latent 4×16×32 — minutes on a 2-core CPU.
  --full   the real TANGO and SD-2.1 UNet configs (2 layers per block, 8×256×16 vs 4×64×64) — use a GPU.

    python benchmarks/bench_sampling.py [--steps 10] [--full] [--device cuda] [--dtype bf16]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from PIL import Image
from transformers import BertConfig, BertModel

from melfusion.models.synapse import VisualSynapse
from melfusion.models.tiny import SD_LIKE_SCHEDULER, minilm_path
from melfusion.models.vocoder import GriffinLimVocoder
from melfusion.pipelines.melfusion import MeLFusionPipeline

TANGO_LAYOUT = dict(
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=[5, 10, 20, 20],
    cross_attention_dim=1024,
    use_linear_projection=True,
)


def build(full: bool, seed: int = 0) -> MeLFusionPipeline:
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    lpb = 2 if full else 1
    music_size = (256, 16) if full else (32, 16)  # 4096 / 512 tokens at the top level
    image_size = 64 if full else (16, 32)  # 4096 / 512 tokens: equal per-level token counts
    unet = UNet2DConditionModel(
        sample_size=music_size,
        in_channels=8,
        out_channels=8,
        layers_per_block=lpb,
        upcast_attention=True,
        **TANGO_LAYOUT,
    )
    image_unet = UNet2DConditionModel(
        sample_size=image_size, in_channels=4, out_channels=4, layers_per_block=lpb, **TANGO_LAYOUT
    )
    vae = AutoencoderKL(  # AudioLDM-S VAE shape: 1 → 8 latent channels, 4× per axis
        in_channels=1,
        out_channels=1,
        latent_channels=8,
        block_out_channels=(128, 256, 512),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=2,
        scaling_factor=0.9228,
    )
    image_vae = AutoencoderKL(  # SD VAE: 3 → 4 latent channels, 8× per axis
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        scaling_factor=0.18215,
        sample_size=512,
    )
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    text = BertModel(
        BertConfig(
            hidden_size=1024,
            num_hidden_layers=1,
            num_attention_heads=8,
            intermediate_size=1024,
            max_position_embeddings=128,
        )
    )
    sched = DDIMScheduler(prediction_type="v_prediction", **SD_LIKE_SCHEDULER)
    pipe = MeLFusionPipeline(
        text_encoder=text.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        vae=vae.eval(),
        vocoder=GriffinLimVocoder(),
        scheduler=sched,
        image_unet=image_unet.eval(),
        image_vae=image_vae.eval(),
        image_scheduler=DDIMScheduler(prediction_type="v_prediction", **SD_LIKE_SCHEDULER),
        image_text_encoder=text.eval(),
        image_tokenizer=tokenizer,
        synapse=VisualSynapse.from_unets(unet, image_unet),
    )
    pipe.synapse.set_alphas(0.1)  # non-zero so the synapse does real work
    pipe.set_progress_bar_config(disable=True)
    return pipe


def image(seed: int, size: int = 512) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.random((8, 8, 3))
    arr = np.kron(base, np.ones((size // 8, size // 8, 1)))
    return Image.fromarray((arr * 255).astype(np.uint8))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(pipe, device, repeats, fresh_cache=True, **kw) -> tuple[float, float]:
    """(best seconds, peak CUDA MiB or nan) over repeats."""
    best, peak = float("inf"), float("nan")
    for _ in range(repeats):
        if fresh_cache:
            pipe.guidance_cache.clear()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        pipe(output_type="latent", progress=False, generator=torch.Generator().manual_seed(0), **kw)
        sync(device)
        best = min(best, time.perf_counter() - t0)
        if device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**20
    return best, peak


def variants_for(half: int) -> dict[str, tuple[dict, bool]]:
    """name: (extra call kwargs, start from an empty guidance cache); ``half`` = the half-step image branch."""
    return {
        "text": (dict(use_image=False), True),
        "inv": (dict(), True),  # the default capture, "trajectory" (the training features)
        "hot": (dict(), False),  # right after "inv": its guidance is cached
        "lag": (dict(guidance_capture="inversion-lagged"), True),
        "rev": (dict(guidance_capture="reverse"), True),
        "half": (dict(image_inversion_steps=half), True),
    }


VARIANTS = tuple(variants_for(1))


@torch.no_grad()
def print_breakdown(
    pipe: MeLFusionPipeline, img: Image.Image, device: str, steps: int, seconds: float
) -> None:
    """Where the extra cost comes from, each part timed on its own (best of 3): the one-off image encode,
    one image-UNet call at batch 1 (one inversion step) and one music-UNet call at the CFG batch of 2."""
    from melfusion.guidance.preprocess import preprocess_image

    def best_of(fn, n: int = 3) -> float:
        t = float("inf")
        for _ in range(n):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            t = min(t, time.perf_counter() - t0)
        return t

    pixels = preprocess_image(img, *pipe.image_resolution).to(device, pipe.image_vae.dtype)
    conditioner = pipe.image_conditioner(device)
    latent = conditioner.encode(pixels)
    null = pipe.null_image_prompt_embeds(device)
    t_enc = best_of(lambda: conditioner.encode(pixels))
    t_img = best_of(lambda: pipe.image_unet(latent, 500, encoder_hidden_states=null))
    frames, _ = pipe._num_frames(seconds)
    cfg = pipe.unet.config
    width = cfg.sample_size[1] if isinstance(cfg.sample_size, (list, tuple)) else cfg.sample_size
    z = torch.randn(
        2, cfg.in_channels, frames // pipe.vae_scale_factor, width, device=device, dtype=latent.dtype
    )
    text, _ = pipe.encode_text(["a calm folk song on acoustic guitar", ""], torch.device(device))
    t_mus = best_of(lambda: pipe.unet(z, 500, encoder_hidden_states=text))
    print(
        f"breakdown: image encode (once) {t_enc:.2f} s; image UNet call, batch 1 {t_img:.3f} s; music UNet "
        f"call, CFG batch 2 {t_mus:.3f} s; image/music per step {t_img / t_mus:.3f}. Predicted ratio_1 at "
        f"{steps} steps ≈ 1 + {t_img / t_mus:.3f} + {t_enc:.2f}/({steps}·{t_mus:.3f}) = "
        f"{1 + t_img / t_mus + t_enc / (steps * t_mus):.3f}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 = steadier on a busy machine)"
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=list(VARIANTS),
        help="which timings to run (text and inv are needed for the ratios); fewer = faster at many steps",
    )
    ap.add_argument("--no-fidelity", action="store_true", help="skip the capture-fidelity comparison")
    args = ap.parse_args()
    if not {"text", "inv"} <= set(args.variants):
        ap.error("--variants must include text and inv (the two sides of the ratios)")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    pipe = build(args.full).to(args.device)
    if dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)
    seconds = args.seconds or pipe.default_audio_length_in_s
    n_params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    n_img = sum(p.numel() for p in pipe.image_unet.parameters()) / 1e6
    print(
        f"config: {'full TANGO/SD-2.1' if args.full else 'reduced full-width'}; music UNet {n_params:.0f}M, "
        f"image UNet {n_img:.0f}M params; {args.steps} steps; {seconds:.2f} s clip; device {args.device}, "
        f"{args.dtype}; torch threads {torch.get_num_threads()}"
    )
    common = dict(
        prompt="a calm folk song on acoustic guitar",
        num_inference_steps=args.steps,
        audio_length_in_s=seconds,
        guidance_scale=7.0,
    )
    img = image(0)
    timed(pipe, args.device, 1, image=img, **common)  # warm-up

    print_breakdown(pipe, img, args.device, args.steps, seconds)

    rows = []
    half = max(1, args.steps // 2)
    variants = {name: v for name, v in variants_for(half).items() if name in args.variants}
    for n in (1, 4):
        # Interleave the variants within each repeat and keep each one's best time: slow drifts of a noisy
        # machine then hit all variants alike.
        best = {k: (float("inf"), float("nan")) for k in variants}
        for _ in range(args.repeats):
            for name, (extra, fresh) in variants.items():
                t, m = timed(
                    pipe,
                    args.device,
                    1,
                    fresh_cache=fresh,
                    image=img,
                    num_waveforms_per_prompt=n,
                    **extra,
                    **common,
                )
                best[name] = (min(best[name][0], t), m)
        nan = (float("nan"), float("nan"))
        (t_text, m_text), (t_inv, m_inv) = best["text"], best["inv"]
        t_rev, m_rev = best.get("rev", nan)
        t_hot, t_half, t_lag = best.get("hot", nan)[0], best.get("half", nan)[0], best.get("lag", nan)[0]
        if "half" in best:
            print(
                f"[{n} sample(s)] image branch at half the steps (--image-steps {half}): "
                f"{t_half:.2f} s ({t_half / t_text:.3f})",
                flush=True,
            )
        print(
            f"[{n} sample(s)] capture during inversion (inversion-lagged, not the training features): "
            f"{t_lag:.2f} s ({t_lag / t_text:.3f})",
            flush=True,
        )
        rows.append((n, t_text, t_inv, t_rev, t_hot, m_text, m_inv, m_rev))
        print(
            f"[{n} sample(s)] text-only {t_text:.2f} s, melfusion {t_inv:.2f} s ({t_inv / t_text:.3f}), "
            f"reverse-pass {t_rev:.2f} s ({t_rev / t_text:.3f}), warm cache {t_hot:.2f} s ({t_hot / t_text:.3f})",
            flush=True,
        )

    print("\nsamples  text-only s  melfusion s (ratio)   reverse-pass s (ratio)  warm-cache s (ratio)")
    for n, t_text, t_inv, t_rev, t_hot, *_ in rows:
        print(
            f"{n:7d}  {t_text:11.2f}  {t_inv:8.2f} ({t_inv / t_text:4.2f})      {t_rev:8.2f} ({t_rev / t_text:4.2f})"
            f"        {t_hot:8.2f} ({t_hot / t_text:4.2f})"
        )
    r1, r4 = rows[0][2] / rows[0][1], rows[1][2] / rows[1][1]
    print(f"\nratio_1 = {r1:.3f} (target <= 1.6: {'PASS' if r1 <= 1.6 else 'MISS'})")
    print(
        f"ratio_4 = {r4:.3f} per sample, 4 samples sharing one image (target <= 1.15: "
        f"{'PASS' if r4 <= 1.15 else 'MISS'})"
    )

    g_inv = pipe.visual_guidance(img, args.steps, "trajectory", progress=False)
    kv_bytes = g_inv.nbytes() - sum(z.numel() * z.element_size() for z in g_inv.latents)
    print(
        f"\ncached guidance per image: {g_inv.nbytes() / 2**20:.1f} MiB "
        f"(K/V {kv_bytes / 2**20:.1f} MiB for {args.steps} steps × {g_inv.num_layers} layers)"
    )
    if args.device.startswith("cuda"):
        print(
            "peak CUDA memory MiB (text-only / melfusion / reverse): "
            + "; ".join(
                f"{n} sample(s): {m_text:.0f} / {m_inv:.0f} / {m_rev:.0f}"
                for n, _, _, _, _, m_text, m_inv, m_rev in rows
            )
        )
    print(f"process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    if args.no_fidelity:
        return 0

    # Fidelity of the cheaper captures against the training features ("trajectory")
    cos = {}
    for mode in ("inversion-lagged", "reverse"):
        other, cos[mode] = pipe.visual_guidance(img, args.steps, mode, progress=False), []
        for s_inv, s_other in zip(g_inv.kv, other.kv):
            for (k_i, v_i), (k_o, v_o) in zip(s_inv, s_other):
                for a, b in ((k_i, k_o), (v_i, v_o)):
                    c = torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), 0)
                    cos[mode].append(c.item())
    lat = {}
    for name, kw in (
        ("inv", dict(image=img)),
        ("lag", dict(image=img, guidance_capture="inversion-lagged")),
        ("rev", dict(image=img, guidance_capture="reverse")),
        ("half", dict(image=img, image_inversion_steps=half)),
        ("other", dict(image=image(1))),
        ("text", dict(image=img, use_image=False)),
    ):
        lat[name] = pipe(
            output_type="latent", progress=False, generator=torch.Generator().manual_seed(0), **common, **kw
        ).audios.float()
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    for mode, c in cos.items():
        print(f"\nfidelity, {mode} vs trajectory: K/V cosine min {min(c):.4f}, mean {np.mean(c):.4f}")
    print(
        f"music latent change vs trajectory: inversion-lagged {rel(lat['lag'], lat['inv']):.4f}; "
        f"reverse {rel(lat['rev'], lat['inv']):.4f}; "
        f"image branch at half the steps vs all steps {rel(lat['half'], lat['inv']):.4f}; "
        f"other image vs this image {rel(lat['other'], lat['inv']):.4f}; "
        f"image vs text-only {rel(lat['inv'], lat['text']):.4f}  (α = 0.1, random weights)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
