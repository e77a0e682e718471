"""Conditioning adherence on the synthetic corpus' held-out test split (paper Table 4-style ablation).

For each test item one clip is generated, with the same seed, in three conditions: text+image (the normal
call), text only (`use_image=False`) and image only (empty prompt). Each clip is probed for tempo class
(`estimate_tempo` + `tempo_class`), mode (`estimate_mode`) and instrument family (a logistic-regression
classifier on timbre features, trained on the train split and cached). The text names the genre and
instrument but never mode or tempo; the image's colours carry mode and tempo class. The items
(`select_balanced`) are chosen so that the text cannot tell the mood either: within each instrument half
are major and half fast, and per genre as near half as the split allows (`--selection cells` is the earlier
round-robin over the four mood cells, whose instruments and genres predicted the tempo class about 73 % of
the time). Accuracies are printed next to chance and to ceiling rows, which apply the same probes to the
real test audio, to it after mel → vocoder, and after mel → VAE encode/decode → vocoder (what the model's
audio stack allows). Image swap: text kept, image replaced by one of an item whose mode and tempo class
both differ; reported is how often the probed mode / tempo class follows the new image.

    .venv/bin/python benchmarks/bench_adherence.py                        # embedded model, 96 items
    .venv/bin/python benchmarks/bench_adherence.py --model runs/embedded/music/final --device cuda
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_adherence.py --n 2 --steps 2 --threads 1   # smoke

Image only: the text is replaced by "" through the pipeline's `use_text=False` (the token of training's text
dropout, also the unconditional CFG branch).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from tqdm.auto import tqdm

from melfusion.audio.io import load_audio
from melfusion.commands.generate import image_guidance_arg
from melfusion.recipes.embedded.family import LogisticFamilyClassifier, train_family_classifier
from melfusion.recipes.embedded.probes import estimate_family, estimate_mode, estimate_tempo, tempo_class
from melfusion.recipes.embedded.synth.attributes import FAMILIES, MODES, TEMPO_CLASSES
from melfusion.utils.files import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("text+image", "text only", "image only")
CEILINGS = ("real audio", "real → vocoder", "real → VAE → vocoder")
ATTRIBUTES = ("tempo_class", "mode", "family")
# Cell order of the round-robin selection: the first two are opposite in both attributes, so even
# --n 2 has a swap partner inside the selection's cells.
CELL_ORDER = (("major", "slow"), ("minor", "fast"), ("major", "fast"), ("minor", "slow"))

TARGET_FAMILY_WITH_TEXT = 0.80
TARGET_MOOD_WITH_IMAGE = 0.75
NEAR_CHANCE_TOLERANCE = 0.15  # |accuracy - chance| allowed for "near chance" (≈ 3 s.e. at n = 96)
TARGET_SECONDS_PER_CLIP = 15.0


# ------------------------------------------------------------------------------------------ items
def read_rows(manifest: Path) -> list[dict[str, Any]]:
    if not manifest.is_file():
        raise SystemExit(f"manifest not found: {manifest} (generate the corpus with `melfusion data synth`)")
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def select_cells(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """n rows taken round-robin over the (mode, tempo class) cells in CELL_ORDER, file order within each
    (`--selection cells`, the default until 2026-12-04)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {c: [] for c in CELL_ORDER}
    for row in rows:
        cells.setdefault((row["mode"], row["tempo_class"]), []).append(row)
    out: list[dict[str, Any]] = []
    depth = 0
    while len(out) < min(n, len(rows)):
        for cell in CELL_ORDER:
            if depth < len(cells[cell]) and len(out) < n:
                out.append(cells[cell][depth])
        depth += 1
    return out


def odd_n_message(n: int) -> str:
    return f"the balanced selection needs an even n (got {n}); use --n {n + 1} or --selection cells"


def select_balanced(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """n rows (even) such that within every instrument half are major and half fast, and per genre the mode
    and tempo class are as balanced as the split allows (`--selection balanced`, the default).

    The text names the genre and the instrument, never the mood. The test split holds out one (mode, tempo
    class) cell per (genre, instrument), so over an unbalanced selection the text predicts the mood and a
    text-only model with a per-instrument bias scores above chance. Solved as a small integer programme
    (HiGHS through scipy): x_k rows from each (genre, instrument, mode, tempo class) group k, at most
    ceil(n / 16) each; per instrument Σ sign_k x_k = 0 for mode and for tempo class (sign +1 major / fast,
    -1 minor / slow); Σ x_k = n; minimise Σ over genres and both attributes of |Σ sign_k x_k|, ties to the
    earlier groups. Rows are taken in file order within a group; the items are ordered by group.
    """
    if n % 2:
        raise ValueError(odd_n_message(n))
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["genre"], row["instrument"], row["mode"], row["tempo_class"]), []).append(row)
    keys = sorted(groups, key=lambda k: (k[1], k[0], k[2], k[3]))
    cap = max(1, math.ceil(n / 16))
    sign = np.array(
        [[1 if k[2] == MODES[0] else -1, 1 if k[3] == TEMPO_CLASSES[1] else -1] for k in keys]
    )  # (K, 2)
    genres = sorted({k[0] for k in keys})
    n_keys, n_aux = len(keys), 2 * len(genres)  # variables: x (K), then u (genre, attribute) >= |imbalance|
    rows_a: list[np.ndarray] = []
    lower: list[float] = []
    upper: list[float] = []

    def constrain(coef: np.ndarray, lo: float, hi: float) -> None:
        rows_a.append(coef)
        lower.append(lo)
        upper.append(hi)

    for instrument in sorted({k[1] for k in keys}):
        mask = np.array([k[1] == instrument for k in keys])
        for a in range(2):
            constrain(np.r_[sign[:, a] * mask, np.zeros(n_aux)], 0.0, 0.0)
    constrain(np.r_[np.ones(n_keys), np.zeros(n_aux)], n, n)
    for g, genre in enumerate(genres):
        mask = np.array([k[0] == genre for k in keys])
        for a in range(2):
            u = np.zeros(n_aux)
            u[2 * g + a] = -1.0
            constrain(np.r_[sign[:, a] * mask, u], -np.inf, 0.0)  # imbalance <= u
            constrain(np.r_[-sign[:, a] * mask, u], -np.inf, 0.0)  # -imbalance <= u
    # the objective is an integer at the optimum; the tie-break term stays below 1
    tie_break = 1e-3 * np.arange(n_keys) / max(n_keys, 1)
    res = milp(
        c=np.r_[tie_break, np.ones(n_aux)],
        constraints=LinearConstraint(np.array(rows_a), lower, upper),
        integrality=np.r_[np.ones(n_keys), np.zeros(n_aux)],
        bounds=Bounds(0, np.r_[[min(cap, len(groups[k])) for k in keys], np.full(n_aux, np.inf)]),
    )
    if res.x is None:
        raise ValueError(
            f"the test split has no balanced selection of {n} items (at most {cap} per genre, instrument and "
            f"mood; {res.message}); use a smaller --n or --selection cells"
        )
    counts = np.round(res.x[:n_keys]).astype(int)
    return [row for k, c in zip(keys, counts) for row in groups[k][:c]]


SELECTIONS: dict[str, Callable[[list[dict[str, Any]], int], list[dict[str, Any]]]] = {
    "balanced": select_balanced,
    "cells": select_cells,
}


def select_items(rows: list[dict[str, Any]], n: int, selection: str = "balanced") -> list[dict[str, Any]]:
    """The benchmark's test items: `select_balanced` (default) or `select_cells`."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose one of {sorted(SELECTIONS)}")
    return SELECTIONS[selection](rows, n)


def swap_partners(items: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
    """For each item, a test row whose mode and tempo class both differ (deterministic, spread over the
    opposite cell; None when that cell is empty)."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["mode"], row["tempo_class"]), []).append(row)
    used: dict[tuple[str, str], int] = {}
    out: list[dict[str, Any] | None] = []
    for item in items:
        other = (
            MODES[1 - MODES.index(item["mode"])],
            TEMPO_CLASSES[1 - TEMPO_CLASSES.index(item["tempo_class"])],
        )
        pool = cells.get(other, [])
        if not pool:
            out.append(None)
            continue
        k = used.get(other, 0)
        used[other] = k + 1
        # stride through the pool so partners are not just the first rows of the cell
        out.append(pool[(k * 7 + 3) % len(pool)])
    return out


# ----------------------------------------------------------------------------------------- probes
def probe(audio: np.ndarray, sample_rate: int, classifier: LogisticFamilyClassifier) -> dict[str, Any]:
    """Tempo, mode and family estimates of one clip (non-finite samples are zeroed and flagged)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    finite = bool(np.isfinite(x).all())
    if not finite:
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    bpm = estimate_tempo(x, sample_rate)
    mode, key, key_score = estimate_mode(x, sample_rate)
    family, family_prob = estimate_family(x, sample_rate, classifier)
    return {
        "bpm": round(bpm, 2),
        "tempo_class": tempo_class(bpm),
        "mode": mode,
        "key": key,
        "key_score": round(key_score, 4),
        "family": family,
        "family_prob": round(family_prob, 4),
        "finite": finite,
        "rms": float(np.sqrt(np.mean(x.astype(np.float64) ** 2))),
    }


# ------------------------------------------------------------------------------------- generation
def make_generate(pipe: Any, args: argparse.Namespace) -> Callable[..., tuple[np.ndarray, float]]:
    def generate(
        image: Path, prompt: str, seed: int, use_image: bool = True, use_text: bool = True
    ) -> tuple[np.ndarray, float]:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        start = time.perf_counter()
        out = pipe(
            image=str(image),
            prompt=prompt,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            image_guidance_scale=args.image_guidance,
            generator=generator,
            use_image=use_image,
            use_text=use_text,
            image_inversion_steps=args.image_steps,
            progress=False,
            seed=seed,
        )
        seconds = time.perf_counter() - start
        return np.asarray(out.audios[0], dtype=np.float32), seconds

    return generate


@torch.no_grad()
def reconstructions(pipe: Any, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Real audio through the model's audio stack: mel → vocoder, and mel → VAE (posterior mode) →
    decode → vocoder, as the pipeline decodes latents."""
    from melfusion.audio.mel import mel_spectrogram, pad_frames_to_multiple
    from melfusion.training.trainer import mel_config_for

    config = mel_config_for(pipe)
    device = pipe._execution_device
    mel = mel_spectrogram(torch.from_numpy(audio)[None], config)  # (1, F, n_mels)
    mel = pad_frames_to_multiple(mel, pipe.vae_scale_factor).unsqueeze(1)  # (1, 1, F', n_mels)
    vae = pipe.vae
    mel = mel.to(device, vae.dtype)
    vocoded = pipe.mel_to_waveform(mel)[0, : len(audio)]
    latents = vae.encode(mel).latent_dist.mode() * vae.config.scaling_factor
    decoded = pipe.mel_to_waveform(pipe.decode_latents(latents))[0, : len(audio)]
    return {
        CEILINGS[1]: vocoded.float().cpu().numpy(),
        CEILINGS[2]: decoded.float().cpu().numpy(),
    }


# ------------------------------------------------------------------------------------------ report
def accuracy(items: list[dict[str, Any]], condition: str) -> dict[str, float]:
    acc = {}
    for attr in ATTRIBUTES:
        hits = [r["probes"][condition][attr] == r["labels"][attr] for r in items if condition in r["probes"]]
        acc[attr] = float(np.mean(hits)) if hits else float("nan")
    acc["mean"] = float(np.mean([acc[a] for a in ATTRIBUTES]))
    return acc


def text_predictable(items: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{"instrument" | "genre": {"tempo_class" | "mode": accuracy}} of guessing the mood from what the text
    names: the majority label per instrument (per genre) among the selected items (in-sample, so an upper
    bound). What a text-only model with such a bias can score without reading the mood from anything; the
    balanced selection makes the instrument's 50 %."""
    out: dict[str, dict[str, float]] = {}
    for key in ("instrument", "genre"):
        out[key] = {}
        for attr in ("tempo_class", "mode"):
            counts: dict[str, dict[str, int]] = {}
            for r in items:
                c = counts.setdefault(r["labels"][key], {})
                c[r["labels"][attr]] = c.get(r["labels"][attr], 0) + 1
            out[key][attr] = sum(max(c.values()) for c in counts.values()) / max(len(items), 1)
    return out


def targets(
    acc: dict[str, dict[str, float]], chance: dict[str, float], mean_seconds: float
) -> list[dict[str, Any]]:
    out = []

    def add(name: str, value: float, goal: str, ok: bool) -> None:
        out.append({"name": name, "value": value, "target": goal, "pass": bool(ok)})

    for cond in ("text+image", "text only"):
        v = acc[cond]["family"]
        add(f"family, {cond}", v, f">= {TARGET_FAMILY_WITH_TEXT:.0%}", v >= TARGET_FAMILY_WITH_TEXT)
    for cond in ("text+image", "image only"):
        for attr in ("mode", "tempo_class"):
            v = acc[cond][attr]
            add(f"{attr}, {cond}", v, f">= {TARGET_MOOD_WITH_IMAGE:.0%}", v >= TARGET_MOOD_WITH_IMAGE)
    for attr in ("mode", "tempo_class"):
        v = acc["text only"][attr]
        goal = f"chance {chance[attr]:.0%} ± {NEAR_CHANCE_TOLERANCE:.0%}"
        add(f"{attr}, text only", v, goal, abs(v - chance[attr]) <= NEAR_CHANCE_TOLERANCE)
    for other in ("text only", "image only"):
        v = acc["text+image"]["mean"]
        add(f"mean, text+image vs {other}", v, f"> {acc[other]['mean']:.1%}", v > acc[other]["mean"])
    add(
        "seconds per clip (text+image)",
        mean_seconds,
        f"<= {TARGET_SECONDS_PER_CLIP:g} s",
        mean_seconds <= TARGET_SECONDS_PER_CLIP,
    )
    return out


def markdown(result: dict[str, Any]) -> str:
    acc, chance = result["accuracy"], result["chance"]
    marks: dict[tuple[str, str], str] = {}
    for t in result["targets"]:
        attr, _, cond = t["name"].partition(", ")
        if attr in ATTRIBUTES:
            marks[(cond, attr)] = f" {'✓' if t['pass'] else '✗'} ({t['target']})"
    lines = [
        "| condition | tempo class | mode | family | mean |",
        "|---|---|---|---|---|",
    ]
    for cond in (*CONDITIONS, *CEILINGS):
        cells = [f"{acc[cond][a]:.1%}{marks.get((cond, a), '')}" for a in ATTRIBUTES]
        lines.append(f"| {cond} | " + " | ".join(cells) + f" | {acc[cond]['mean']:.1%} |")
    lines.append(
        "| chance | "
        + " | ".join(f"{chance[a]:.1%}" for a in ATTRIBUTES)
        + f" | {np.mean([chance[a] for a in ATTRIBUTES]):.1%} |"
    )
    predictable = result.get("text_predictable")
    if predictable:
        lines += [""] + [
            f"Predictable from the {key} alone (majority per {key} over these items): tempo class "
            f"{p['tempo_class']:.1%}, mode {p['mode']:.1%}."
            for key, p in predictable.items()
        ]
    swap = result["swap"]
    lines += [
        "",
        f"Image swap ({swap['n']} items; text kept, image of an item with the other mode and tempo class):",
        "",
        "| follows the new image | mode | tempo class | mean abs Δ bpm |",
        "|---|---|---|---|",
        f"| swapped | {swap['follows_mode']:.1%} | {swap['follows_tempo_class']:.1%} | "
        f"{swap['mean_abs_delta_bpm']:.1f} (labels: {swap['mean_abs_delta_label_bpm']:.1f}) |",
    ]
    t = result["timing"]
    lines += [
        "",
        f"Generation (text+image, {t['steps']} steps, image guidance from scratch, {t['threads']} threads, "
        f"{t['device']}): mean {t['mean_s']:.2f} s, best {t['best_s']:.2f} s per clip "
        f"(text only: mean {t['text_only_mean_s']:.2f} s).",
        "",
        "Targets:",
    ]
    for tg in result["targets"]:
        value = f"{tg['value']:.2f} s" if tg["name"].startswith("seconds") else f"{tg['value']:.1%}"
        name = tg["name"].replace("tempo_class", "tempo class")
        lines.append(f"- {'PASS' if tg['pass'] else 'FAIL'} {name}: {value} (target {tg['target']})")
    return "\n".join(lines)


def finite_json(obj: Any) -> Any:
    """NaN / infinite floats → None, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# -------------------------------------------------------------------------------------------- main
def add_run_args(p: argparse.ArgumentParser, n: int, out: str) -> None:
    """Model, corpus, items, seed, device and classifier options (shared with sweep_guidance.py)."""
    p.add_argument("--model", default=None, help="pipeline folder (default: the embedded model)")
    p.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpus", help="synthetic corpus folder")
    p.add_argument("--n", type=int, default=n, help="test items")
    p.add_argument(
        "--selection",
        choices=sorted(SELECTIONS),
        default="balanced",
        help="balanced: within each instrument half major and half fast, genres as balanced as the split "
        "allows, so the text cannot tell the mood (default); cells: round-robin over the four mood cells "
        "(the default until 2026-12-04)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0, help="item i uses seed + i in every condition")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto (default)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / out, help="JSON output")
    p.add_argument(
        "--classifier",
        type=Path,
        default=ROOT / "runs" / "family_classifier.safetensors",
        help="family classifier cache (trained on the corpus' train split when missing)",
    )
    p.add_argument("--classifier-items", type=int, default=1500, help="train clips for a new classifier")


def check_run_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    if args.n < 1:
        p.error("--n must be >= 1")
    if args.selection == "balanced" and args.n % 2:
        p.error(odd_n_message(args.n))
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(p, n=96, out="bench_adherence.json")
    p.add_argument("--guidance", type=float, default=None, help="text CFG scale (default: the pipeline's)")
    p.add_argument(
        "--image-guidance",
        type=image_guidance_arg,
        default=None,
        help="separate image CFG scale, or 'off' (image in both CFG branches); default: the model's",
    )
    p.add_argument(
        "--image-steps",
        type=int,
        default=None,
        help="image inversion steps (default: the pipeline's, = --steps)",
    )
    return check_run_args(p, p.parse_args(argv))


def load_classifier(args: argparse.Namespace) -> LogisticFamilyClassifier:
    if args.classifier.is_file():
        print(f"family classifier: {args.classifier}")
        return LogisticFamilyClassifier.load(args.classifier)
    print(f"training the family classifier on {args.classifier_items} train clips ...")
    clf = train_family_classifier(args.corpus / "train.jsonl", max_items=args.classifier_items)
    clf.save(args.classifier)
    print(f"saved {args.classifier}")
    return clf


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from melfusion.commands.generate import apply_image_guidance
    from melfusion.loading import load_pipeline, resolve_device

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    rows = read_rows(args.corpus / "test.jsonl")
    items = select_items(rows, args.n, args.selection)
    if len(items) < args.n:
        print(f"note: the test split has only {len(items)} items", file=sys.stderr)
    partners = swap_partners(items, rows)
    classifier = load_classifier(args)

    device = resolve_device(args.device)
    pipe, model_name = load_pipeline(args.model, device)
    pipe.set_progress_bar_config(disable=True)
    call_defaults = inspect.signature(type(pipe).__call__).parameters
    if args.steps is None:
        args.steps = int(call_defaults["num_inference_steps"].default)
    if args.guidance is None:
        args.guidance = float(call_defaults["guidance_scale"].default)
    scale = apply_image_guidance(pipe, args.image_guidance)  # the scale every call uses:
    args.image_guidance = scale if scale is not None else pipe.config.get("default_image_guidance_scale")
    sr = pipe.sample_rate
    seconds = float(pipe.default_audio_length_in_s)
    print(
        f"model: {model_name}\n{len(items)} test items, {args.steps} steps, guidance {args.guidance}, "
        f"image guidance {args.image_guidance if args.image_guidance is not None else 'off'}, "
        f"{seconds:g} s clips at {sr} Hz, {threads} threads, {device}"
    )

    generate = make_generate(pipe, args)
    records: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {c: [] for c in (*CONDITIONS, "swap")}
    for i, (row, partner) in enumerate(tqdm(list(zip(items, partners)), desc="items")):
        seed = args.seed + i
        image = args.corpus / row["image"]
        labels = {a: row[a] for a in ATTRIBUTES} | {k: row[k] for k in ("bpm", "instrument", "genre")}
        probes: dict[str, dict[str, Any]] = {}

        pipe.guidance_cache.clear()  # time the full cost, image inversion included
        audio, dt = generate(image, row["text"], seed)
        times["text+image"].append(dt)
        probes["text+image"] = probe(audio, sr, classifier)
        audio, dt = generate(image, row["text"], seed, use_image=False)
        times["text only"].append(dt)
        probes["text only"] = probe(audio, sr, classifier)
        audio, dt = generate(image, row["text"], seed, use_text=False)
        times["image only"].append(dt)
        probes["image only"] = probe(audio, sr, classifier)

        real = load_audio(args.corpus / row["audio"], sr)
        probes[CEILINGS[0]] = probe(real, sr, classifier)
        for name, rec in reconstructions(pipe, real).items():
            probes[name] = probe(rec, sr, classifier)

        swap = None
        if partner is not None:
            audio, dt = generate(args.corpus / partner["image"], row["text"], seed)
            times["swap"].append(dt)
            swap = {
                "partner": partner["id"],
                "partner_labels": {"mode": partner["mode"], "tempo_class": partner["tempo_class"]}
                | {"bpm": partner["bpm"]},
                "probe": probe(audio, sr, classifier),
            }
        records.append(
            {"id": row["id"], "seed": seed, "text": row["text"], "labels": labels, "probes": probes}
            | {"swap": swap}
        )

    chance = {"tempo_class": 1 / len(TEMPO_CLASSES), "mode": 1 / len(MODES), "family": 1 / len(FAMILIES)}
    acc = {c: accuracy(records, c) for c in (*CONDITIONS, *CEILINGS)}
    swapped = [r for r in records if r["swap"] is not None]
    swap_summary = {
        "n": len(swapped),
        "follows_mode": float(
            np.mean([r["swap"]["probe"]["mode"] == r["swap"]["partner_labels"]["mode"] for r in swapped])
        )
        if swapped
        else float("nan"),
        "follows_tempo_class": float(
            np.mean(
                [
                    r["swap"]["probe"]["tempo_class"] == r["swap"]["partner_labels"]["tempo_class"]
                    for r in swapped
                ]
            )
        )
        if swapped
        else float("nan"),
        "mean_abs_delta_bpm": float(
            np.mean([abs(r["swap"]["probe"]["bpm"] - r["probes"]["text+image"]["bpm"]) for r in swapped])
        )
        if swapped
        else float("nan"),
        "mean_abs_delta_label_bpm": float(
            np.mean([abs(r["swap"]["partner_labels"]["bpm"] - r["labels"]["bpm"]) for r in swapped])
        )
        if swapped
        else float("nan"),
    }
    t_ti = times["text+image"]
    timing = {
        "steps": args.steps,
        "image_steps": args.image_steps,
        "threads": threads,
        "device": device,
        "mean_s": float(np.mean(t_ti)),
        "best_s": float(np.min(t_ti)),
        "text_only_mean_s": float(np.mean(times["text only"])),
        "per_condition_mean_s": {k: float(np.mean(v)) for k, v in times.items() if v},
    }
    result = {
        "model": model_name,
        "config": {
            "corpus": str(args.corpus),
            "n": len(records),
            "selection": args.selection,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "image_guidance_scale": args.image_guidance,
            "seed": args.seed,
            "audio_length_in_s": seconds,
            "sample_rate": sr,
            "classifier": str(args.classifier),
            "classifier_families": list(classifier.families),
            "image_only_prompt": "",
        },
        "chance": chance,
        "text_predictable": text_predictable(records),
        "accuracy": acc,
        "swap": swap_summary,
        "timing": timing,
        "items": records,
    }
    result["targets"] = targets(acc, chance, timing["mean_s"])
    text = markdown(result)
    print(text)
    result["markdown"] = text
    atomic_write_json(args.out, finite_json(result))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
