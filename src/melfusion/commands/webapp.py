"""The page of `melfusion app`: a gradio UI over the same checks, loading and saving as `melfusion generate`.

The form becomes `melfusion generate`'s options (`form_args`), checked by its own `validate_args`, so the page
shows the CLI's one-line messages. `Studio` keeps the loaded pipelines (per model and device) and writes
each request's clips, sidecars and spectrogram pictures to a fresh folder under its output folder.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from melfusion.commands.generate import (
    apply_image_guidance,
    call_kwargs,
    check_free_space,
    default_seconds,
    image_guidance_arg,
    register,
    resolve_call_settings,
    validate_args,
)
from melfusion.errors import MelfusionInputError
from melfusion.loading import is_art2mus, load_pipeline

APP_MAX_SECONDS = 120.0
EMBEDDED = "embedded default model"
SPECTROGRAM_MIN_WIDTH = 512  # px; short clips are stretched to this
SPECTROGRAM_ROW_PX = 4  # px per mel band
SPECTROGRAM_RANGE = 8.0  # natural-log units shown below the loudest bin (about 70 dB)
# A dark-to-bright colour ramp (viridis anchors) for the spectrogram; no matplotlib needed
_RAMP = np.array(
    [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32
)
SYSTEM_FONTS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


@dataclass
class Sample:
    """One generated clip as the page shows it."""

    audio: str
    spectrogram: str
    sidecar: dict[str, Any]


def _option(value: str | float | None, kind: Callable[[str], Any], flag: str) -> Any:
    """A form field read as argparse reads the option, with its message; empty: left out."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        return kind(text)
    except argparse.ArgumentTypeError as err:
        reason = str(err)
    except ValueError:
        reason = f"invalid {getattr(kind, '__name__', kind)} value: {text!r}"
    raise MelfusionInputError(f"argument {flag}: {reason}")


def form_args(
    image: str | None,
    prompt: str | None,
    negative: str | None = None,
    seconds: str | float | None = None,
    steps: str | int | None = None,
    guidance: str | float | None = None,
    image_guidance: str | float | None = None,
    seed: str | int | None = None,
    num_samples: str | int | None = 1,
    model: str | None = None,
) -> argparse.Namespace:
    """The form as `melfusion generate` options (text fields parsed like its arguments, empty ones left to
    the model's defaults), checked by its `validate_args`: the same bounds and one-line messages."""
    if not image:
        raise MelfusionInputError("missing image: upload or drop an image (PNG, JPEG, WebP, ...)")
    parser = argparse.ArgumentParser(prog="melfusion")
    register(parser.add_subparsers())
    args = parser.parse_args(["generate"])  # every option at its default, new ones included
    vars(args).update(
        image=str(image),
        text=prompt or "",
        out="app.wav",  # checked for its suffix only; Studio picks the real folder
        negative=(negative or "").strip() or None,
        seconds=_option(seconds, float, "--seconds"),
        steps=_option(steps, int, "--steps"),
        guidance=_option(guidance, float, "--guidance"),
        image_guidance=_option(image_guidance, image_guidance_arg, "--image-guidance"),
        seed=_option(seed, int, "--seed"),
        num_samples=_option(num_samples, int, "--num-samples"),
        model=(model or "").strip() or None,
    )
    if args.num_samples is None:
        args.num_samples = 1
    if args.seconds is not None and args.seconds > APP_MAX_SECONDS:
        raise MelfusionInputError(
            f"--seconds must be in (0, {APP_MAX_SECONDS:g}] in the app, got {args.seconds:g} (melfusion "
            "generate makes longer clips)"
        )
    validate_args(args)
    return args


def spectrogram_image(audio: np.ndarray, sample_rate: int) -> Image.Image:
    """The clip's log-mel spectrogram as an RGB picture: time left to right, low bands at the bottom."""
    from melfusion.audio.mel import MelConfig, mel_spectrogram

    config = MelConfig(sample_rate=sample_rate, fmax=min(8000.0, sample_rate / 2))
    mel = mel_spectrogram(np.asarray(audio, dtype=np.float32), config)[0].numpy().T[::-1]  # (n_mels, F)
    level = np.clip((mel - mel.max()) / SPECTROGRAM_RANGE + 1.0, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.minimum(level.astype(int), len(_RAMP) - 2)
    frac = (level - low)[..., None]
    rgb = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    picture = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    size = (max(mel.shape[1], SPECTROGRAM_MIN_WIDTH), mel.shape[0] * SPECTROGRAM_ROW_PX)
    return picture.resize(size, Image.Resampling.NEAREST)


class Studio:
    """Loaded pipelines (the last `max_models`, per model and device) and the generation of one request at
    a time; clips go to a fresh folder per request under `out_dir`."""

    def __init__(self, device: str, out_dir: str | Path, max_models: int = 2) -> None:
        self.device = device
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_models = max_models
        self._pipes: OrderedDict[tuple[str | None, str], tuple[Any, str, float | None]] = OrderedDict()
        self._lock = threading.Lock()

    def pipeline(self, model: str | None) -> tuple[Any, str, float | None]:
        """(pipeline, model name, its default image guidance), loaded once per (model, device)."""
        key = (None if model is None else str(Path(model).resolve()), self.device)
        if key not in self._pipes:
            pipe, name = load_pipeline(model, self.device)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[key] = (pipe, name, pipe.config.get("default_image_guidance_scale"))
            while len(self._pipes) > self.max_models:
                self._pipes.popitem(last=False)
        self._pipes.move_to_end(key)
        return self._pipes[key]

    def generate(
        self, args: argparse.Namespace, on_step: Callable[[int, int], None] | None = None
    ) -> tuple[list[Sample], list[str]]:
        """Clips for checked `form_args`; returns them and the warnings to show (the pipeline's, long clips).
        ``on_step(done, total)`` follows the denoising steps."""
        import torch

        from melfusion import __version__
        from melfusion.audio.io import read_sidecar, save_audio
        from melfusion.utils.files import sha256_file

        with self._lock:
            pipe, model_name, default_image_guidance = self.pipeline(args.model)
            art2mus = is_art2mus(pipe)
            if not art2mus:  # undo an earlier request's 'off' on this cached pipeline
                pipe.register_to_config(default_image_guidance_scale=default_image_guidance)
            resolve_call_settings(pipe, args)
            image_guidance = None if art2mus else apply_image_guidance(pipe, args.image_guidance)
            seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
            notes = []
            window = default_seconds(pipe)
            if not art2mus and args.seconds is not None and args.seconds > window + 1e-6:
                notes.append(
                    f"{args.seconds:g} s is longer than the model's {window:g} s window: the clip is made "
                    "window by window and crossfaded"
                )
            sample_rate = getattr(pipe, "sample_rate", None) or int(pipe.vocoder.config.sampling_rate)
            folder = Path(
                tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}-", dir=self.out_dir)
            )
            check_free_space(folder, args.num_samples, args.seconds or window, sample_rate)

            done = 0

            def tick(*_: Any) -> dict[str, Any]:
                nonlocal done
                done += 1
                if on_step is not None:
                    on_step(done, args.steps if art2mus else pipe.num_timesteps)
                return {}

            steps_hook = (
                {"callback": tick, "callback_steps": 1} if art2mus else {"callback_on_step_end": tick}
            )
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                result = pipe(
                    image=args.image,
                    prompt=args.text,
                    num_waveforms_per_prompt=args.num_samples,
                    generator=torch.Generator(device="cpu").manual_seed(seed),
                    progress=False,
                    **call_kwargs(pipe, args, image_guidance),
                    **steps_hook,
                    **({} if art2mus else {"seed": seed}),
                )
            notes += [str(w.message) for w in caught if w.category is UserWarning]
            elapsed = round(time.perf_counter() - start, 3)
            image_sha = sha256_file(args.image)
            samples = []
            for i, audio in enumerate(result.audios):
                path = folder / f"melfusion_seed{seed}_{i}.wav"
                meta = {
                    **result.parameters,
                    "model": model_name,
                    "image": str(Path(args.image).resolve()),
                    "image_file_sha256": image_sha,
                    "sample_index": i,
                    "device": self.device,
                    "generation_seconds": elapsed,
                    "seed": seed,
                    "image_guidance": "off" if args.image_guidance == "off" else image_guidance,
                    "melfusion_version": __version__,
                    "command": "melfusion app",
                }
                save_audio(path, audio, result.sample_rate, metadata=meta)
                picture = path.with_suffix(".png")
                spectrogram_image(audio, result.sample_rate).save(picture)
                samples.append(Sample(str(path), str(picture), read_sidecar(path) or meta))
            return samples, list(dict.fromkeys(notes))


def build_app(studio: Studio, model: str | None = None) -> Any:
    """The gr.Blocks page; `model` (a folder from the command line) is offered, and chosen, beside the
    embedded default."""
    import gradio as gr

    def one_line(err: Exception) -> str:
        return " ".join(str(err).splitlines())

    def preview(path: str | None) -> Image.Image | None:
        from melfusion.guidance.preprocess import load_image

        try:
            return load_image(path) if path else None
        except MelfusionInputError:
            return None  # Generate says what is wrong with it

    def generate(
        image: str | None,
        prompt: str,
        negative: str,
        seconds: str,
        steps: str,
        guidance: str,
        image_guidance: str,
        seed: str,
        num_samples: float | None,
        choice: str,
        folder: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (gradio injects it by its default)
    ) -> list[dict[str, Any]]:
        chosen = folder.strip() or (None if choice == EMBEDDED else choice)
        try:
            args = form_args(
                image, prompt, negative, seconds, steps, guidance, image_guidance, seed, num_samples, chosen
            )
            progress(0, desc="loading the model")
            samples, notes = studio.generate(
                args, lambda done, total: progress(done / total, desc=f"step {done}/{total}")
            )
        except MelfusionInputError as err:  # the upload's own name, not gradio's copy of it
            message = one_line(err)
            raise gr.Error(
                message.replace(str(Path(image)), Path(image).name) if image else message
            ) from None
        except Exception as err:  # anything else still gets its one line in the page; the server goes on
            raise gr.Error(f"generation failed: {type(err).__name__}: {one_line(err)}") from err
        for note in notes:
            gr.Warning(note)
        return [asdict(s) for s in samples]

    choices = [EMBEDDED] + ([model] if model else [])
    with gr.Blocks(title="melfusion", analytics_enabled=False) as demo:
        gr.Markdown("# melfusion\nMusic from an image and a text prompt (MeLFusion), made on this machine.")
        with gr.Row():
            with gr.Column():
                image = gr.File(label="Image (upload or drop)", type="filepath", elem_id="image")
                shown = gr.Image(label="Image", interactive=False, height=180, show_label=False, buttons=[])
                prompt = gr.Textbox(
                    label="Prompt", placeholder="a soft folk track on violin", elem_id="prompt"
                )
                negative = gr.Textbox(label="Negative prompt (optional)")
                with gr.Row():  # text fields: empty means the model's default, as an option left out
                    seconds = gr.Textbox(
                        label=f"Seconds (up to {APP_MAX_SECONDS:g})", placeholder="the model's"
                    )
                    steps = gr.Textbox(label="Steps", placeholder="the model's")
                    num_samples = gr.Number(label="Samples", value=1, precision=0)
                with gr.Row():
                    guidance = gr.Textbox(label="Text guidance", placeholder="the model's")
                    image_guidance = gr.Textbox(
                        label="Image guidance (a number or off)", placeholder="the model's"
                    )
                    seed = gr.Textbox(label="Seed", placeholder="random")
                choice = gr.Dropdown(choices, value=choices[-1], label="Model")
                folder = gr.Textbox(label="or a model folder on this machine (overrides Model)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                results = gr.State([])

                @gr.render(inputs=results)
                def show(samples: list[dict[str, Any]]) -> None:
                    if not samples:
                        gr.Markdown("The clips appear here.")
                    for i, s in enumerate(samples):
                        gr.Audio(s["audio"], type="filepath", label=f"sample {i}", buttons=["download"])
                        gr.Image(
                            s["spectrogram"], label=f"sample {i}: log-mel spectrogram", buttons=["download"]
                        )
                        with gr.Accordion(f"sample {i}: sidecar JSON", open=i == 0):
                            gr.JSON(s["sidecar"])

        image.change(preview, image, shown)
        inputs = [
            image,
            prompt,
            negative,
            seconds,
            steps,
            guidance,
            image_guidance,
            seed,
            num_samples,
            choice,
        ]
        button.click(generate, [*inputs, folder], results, concurrency_limit=1)
    return demo


def theme() -> Any:
    """gradio's default look with the system's fonts: the page loads no web font."""
    import gradio as gr

    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))
