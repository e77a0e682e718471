"""`melfusion describe`: the Art2Mus artwork–description dataset (paper §3.2, LLaVA + "Describe this artwork").

Any transformers image-to-text model loads through `AutoModelForImageTextToText`: chat models with an
image placeholder (LLaVA, Qwen2-VL, ...) get the prompt through the processor's chat template; captioners
(BLIP, ViT-GPT-2 `VisionEncoderDecoderModel`) get the image alone (BLIP also takes the prompt as a text
prefix). Decoding is greedy, so a rerun gives the same text.

Output: a JSONL manifest with one row per artwork, `{"id", "image", "text"}` (paths relative to the
manifest's folder). With `pairs=` (the manifest `melfusion pair` wrote) rows are joined on the image and
become triplets with the paired track — the paper's description–music dataset. Descriptions are appended
to `<out>.partial.jsonl` as they are made, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from melfusion.errors import MelfusionInputError
from melfusion.pipelines.art2mus.constants import DESCRIBE_PROMPT
from melfusion.utils.files import atomic_write_text, sha256_file

logger = logging.getLogger(__name__)


class ImageDescriber:
    """describe(list of PIL images) → list of descriptions."""

    def __init__(
        self,
        model: Any,
        *,
        processor: Any = None,
        image_processor: Any = None,
        tokenizer: Any = None,
        prompt: str = DESCRIBE_PROMPT,
        max_new_tokens: int = 128,
        model_id: str = "model",
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.image_processor = (
            image_processor if image_processor is not None else getattr(processor, "image_processor", None)
        )
        self.tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.model_id = model_id

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike[str],
        *,
        prompt: str = DESCRIBE_PROMPT,
        max_new_tokens: int = 128,
        device: str | None = None,
        allow_download: bool = False,
    ) -> ImageDescriber:
        """Load a model folder or a hub id (from the local cache unless `allow_download`)."""
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        name = os.fspath(model_id)
        local = not allow_download
        try:
            AutoConfig.from_pretrained(name, local_files_only=local)
        except (OSError, ValueError) as err:
            hint = (
                "" if allow_download else " (or pass --allow-download to fetch it from the Hugging Face hub)"
            )
            raise MelfusionInputError(
                f"image-to-text model {name!r} not found: give a model folder or a hub id in the local cache"
                f"{hint}; {str(err).splitlines()[0]}"
            ) from None
        try:
            model = AutoModelForImageTextToText.from_pretrained(name, local_files_only=local)
        except ValueError as err:
            raise MelfusionInputError(
                f"{name!r} is not an image-to-text model transformers can load "
                f"(AutoModelForImageTextToText): {str(err).splitlines()[0]}"
            ) from None
        processor = image_processor = tokenizer = None
        try:
            processor = AutoProcessor.from_pretrained(name, local_files_only=local)
        except (OSError, ValueError, KeyError, TypeError):
            processor = None
        if processor is None or getattr(processor, "image_processor", None) is None:
            tokenizer = processor if processor is not None and hasattr(processor, "batch_decode") else None
            processor = None
            try:
                image_processor = AutoImageProcessor.from_pretrained(name, local_files_only=local)
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(name, local_files_only=local)
            except (OSError, ValueError) as err:
                raise MelfusionInputError(
                    f"{name!r} has no image processor / tokenizer files transformers can load ({err})"
                ) from None
        from melfusion.utils.devices import resolve_device

        model = model.to(resolve_device(device))
        return cls(
            model,
            processor=processor,
            image_processor=image_processor,
            tokenizer=tokenizer,
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            model_id=name,
        )

    def _chat_text(self) -> str | None:
        proc = self.processor
        if proc is None or not getattr(proc, "chat_template", None):
            return None
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}
        ]
        return proc.apply_chat_template(conversation, add_generation_prompt=True)

    @torch.no_grad()
    def describe(self, images: Sequence[Any]) -> list[str]:
        images = [im.convert("RGB") for im in images]
        device = next(self.model.parameters()).device
        gen = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        if self.processor is not None:  # multimodal processor: chat template or text prefix
            text = self._chat_text()
            texts = [text if text is not None else self.prompt] * len(images)
            inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True).to(device)
            out = self.model.generate(**inputs, **gen)
            if not self.model.config.is_encoder_decoder and "input_ids" in inputs:
                out = out[:, inputs["input_ids"].shape[1] :]  # drop the prompt
            decoded = self.processor.batch_decode(out, skip_special_tokens=True)
        else:  # captioner: image processor + tokenizer
            pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"].to(device)
            out = self.model.generate(pixel_values=pixels, **gen)
            decoded = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [d.strip() for d in decoded]


@dataclass
class DescribeReport:
    manifest: Path
    rows: list[dict[str, Any]]
    resumed: int
    described: int
    empty: int


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return str(path)


def _partial_path(out: Path) -> Path:
    return out.with_name(f"{out.name}.partial.jsonl")


def _read_partial(path: Path) -> dict[str, str]:
    """key → description from a partial file (rows of another model/prompt are ignored)."""
    done: dict[str, str] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("key"), str) and isinstance(row.get("text"), str):
            done[row["key"]] = row["text"]
    return done


def describe_folder(
    images: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | ImageDescriber,
    prompt: str = DESCRIBE_PROMPT,
    pairs: str | os.PathLike[str] | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 128,
    device: str | None = None,
    allow_download: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> DescribeReport:
    """Describe every image under `images` (or every image of `pairs`) and write the manifest."""
    from melfusion.data.manifest import read_manifest
    from melfusion.guidance.preprocess import load_image
    from melfusion.pairing.embed import record_ids, scan_folder

    out = Path(out).expanduser().resolve()
    if not prompt.strip():
        raise MelfusionInputError("--prompt must not be empty")
    paired: dict[str, Any] = {}
    if pairs is not None:
        for rec in read_manifest(pairs):
            paired[str(rec.image.resolve())] = rec
    if images is not None:
        root = Path(images).expanduser()
        paths, _ = scan_folder(root, "image")
        ids = record_ids(paths, root)
        if paired:
            missing = [p for p in paths if str(p.resolve()) not in paired]
            if missing:
                logger.warning(
                    "%d image(s) have no pair in %s and are left out, e.g. %s",
                    len(missing),
                    pairs,
                    missing[0],
                )
                paths = [p for p in paths if str(p.resolve()) in paired]
    elif paired:
        paths = [Path(k) for k in paired]
        ids = {p: paired[str(p)].id for p in paths}
    else:
        raise MelfusionInputError("give --images DIR, --pairs MANIFEST, or both")
    if not paths:
        raise MelfusionInputError("no image to describe")
    describer = (
        model
        if isinstance(model, ImageDescriber)
        else ImageDescriber.from_pretrained(
            model, prompt=prompt, max_new_tokens=max_new_tokens, device=device, allow_download=allow_download
        )
    )
    tag = json.dumps([describer.model_id, describer.prompt, describer.max_new_tokens])
    keys: dict[Path, str] = {}
    for p in paths:
        try:
            keys[p] = f"{sha256_file(p)}:{tag}"
        except OSError as err:
            raise MelfusionInputError(f"cannot read {p} ({err.strerror or err})") from None
    partial = _partial_path(out)
    done = _read_partial(partial)
    resumed = sum(1 for p in paths if keys[p] in done)
    todo = [p for p in paths if keys[p] not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[tuple[Path, str]] = []
    described = 0
    bar = tqdm(total=len(todo), desc="describing", unit="image", disable=not progress)
    with open(partial, "a", encoding="utf-8") as log:
        for s in range(0, len(todo), max(1, batch_size)):
            chunk, pil = [], []
            for p in todo[s : s + batch_size]:
                try:
                    pil.append(load_image(p))
                    chunk.append(p)
                except MelfusionInputError as err:
                    if not skip_bad:
                        raise MelfusionInputError(
                            f"{err}; {resumed + described} description(s) so far are kept in {partial} and "
                            "reused by the next run (or pass --skip-bad)"
                        ) from None
                    skipped.append((p, str(err)))
            if chunk:
                texts = describer.describe(pil)
                for p, text in zip(chunk, texts):
                    done[keys[p]] = text
                    log.write(
                        json.dumps({"key": keys[p], "image": str(p), "text": text}, ensure_ascii=False) + "\n"
                    )
                log.flush()
                os.fsync(log.fileno())
                described += len(chunk)
            bar.update(len(todo[s : s + batch_size]))
    bar.close()
    rows: list[dict[str, Any]] = []
    base = out.parent
    for p in paths:
        if keys[p] not in done:
            continue
        row: dict[str, Any] = {"id": ids[p], "image": _relative(p.resolve(), base), "text": done[keys[p]]}
        rec = paired.get(str(p.resolve()))
        if rec is not None:
            row["audio"] = _relative(rec.audio, base)
            row.update({k: v for k, v in rec.extra.items() if k not in row})
        row["description_model"] = describer.model_id
        rows.append(row)
    empty = sum(1 for r in rows if not r["text"])
    if empty:
        logger.warning("%d description(s) are empty; manifest readers skip such rows", empty)
    if skipped:
        logger.warning("left out %d unusable image(s), e.g. %s", len(skipped), skipped[0][1])
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    partial.unlink(missing_ok=True)
    return DescribeReport(out, rows, resumed, described, empty)
