"""`melfusion app`: the form's checks (the CLI's messages), the spectrogram picture, Studio, and the page in a
real browser (Debian's chromium driven by playwright; skipped only when either is missing)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from melfusion_testing import make_image

from melfusion.cli import main
from melfusion.commands.webapp import (
    SPECTROGRAM_MIN_WIDTH,
    SPECTROGRAM_ROW_PX,
    Studio,
    form_args,
    spectrogram_image,
)
from melfusion.errors import MelfusionInputError

CHROMIUM = os.environ.get("MELFUSION_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium hangs on a closed network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SR, HOP = 16000, 160
WEB = ("http", "https", "ws", "wss")  # schemes of requests that could leave the machine (not blob:, data:)


@pytest.fixture(scope="module")
def app_model(tmp_path_factory, tiny_components_factory):
    """A tiny saved MeLFusionPipeline (0.64 s window) whose default image guidance is 3."""
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    path = tmp_path_factory.mktemp("app") / "tiny"
    pipe = MeLFusionPipeline(**tiny_components_factory(audio_seconds=0.64, image_size=16))
    pipe.register_to_config(default_image_guidance_scale=3.0)
    pipe.save_pretrained(path)
    return path


def cli_error(argv: list[str], capsys) -> str:
    """The one-line error `melfusion generate` prints for argv (argparse's or validate_args's)."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's type errors
        code = exit_.code
    assert code == 2
    return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("melfusion generate: error: ")


FLAGS = {"prompt": "--text", "seconds": "--seconds", "steps": "--steps", "guidance": "--guidance"}
FLAGS |= {
    "image_guidance": "--image-guidance",
    "seed": "--seed",
    "num_samples": "--num-samples",
    "model": "--model",
}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "  "),
        ("steps", "0"),
        ("steps", "2.5"),
        ("seconds", "-1"),
        ("seconds", "nan"),
        ("guidance", "-1"),
        ("image_guidance", "loud"),
        ("image_guidance", "-2"),
        ("seed", "-1"),
        ("seed", "x"),
        ("num_samples", 0),
        ("model", "/no/such/model"),
    ],
)
def test_form_errors_are_the_cli_messages(field, value, image_file, tmp_path, capsys):
    form = {"image": str(image_file), "prompt": "calm piano", field: value}
    with pytest.raises(MelfusionInputError) as err:
        form_args(**form)
    argv = [
        "generate",
        "--image",
        str(image_file),
        "--out",
        str(tmp_path / "o.wav"),
        "--text",
        form["prompt"],
    ]
    assert str(err.value) == cli_error([*argv, FLAGS[field], str(value)], capsys)


def test_form_not_an_image_is_the_cli_message(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(MelfusionInputError, match="^not an image file: ") as err:
        form_args(str(notes), "calm piano")
    argv = ["generate", "--image", str(notes), "--text", "x", "--out", str(tmp_path / "o.wav")]
    assert str(err.value) == cli_error(argv, capsys)


def test_form_app_limits_and_defaults(image_file):
    with pytest.raises(MelfusionInputError, match=r"^--seconds must be in \(0, 120\] in the app, got 121"):
        form_args(str(image_file), "calm piano", seconds="121")
    with pytest.raises(MelfusionInputError, match="^missing image: upload or drop an image"):
        form_args(None, "calm piano")
    args = form_args(str(image_file), "calm piano", seconds=" 30 ", image_guidance="OFF", seed="7")
    assert (args.seconds, args.image_guidance, args.seed, args.num_samples) == (30.0, "off", 7, 1)
    args = form_args(str(image_file), "calm piano", steps="", guidance="", negative="  ")
    assert args.steps is None and args.guidance is None and args.negative is None and args.model is None


def test_spectrogram_image_shape_and_orientation():
    t = np.arange(SR) / SR
    low = spectrogram_image(0.5 * np.sin(2 * np.pi * 200 * t).astype(np.float32), SR)
    assert low.mode == "RGB" and low.size == (SPECTROGRAM_MIN_WIDTH, 64 * SPECTROGRAM_ROW_PX)
    brightness = np.asarray(low, dtype=float).sum(axis=(1, 2))
    assert brightness.argmax() > low.height * 3 // 4  # a low tone is drawn near the bottom
    long = spectrogram_image(np.zeros(10 * SR, dtype=np.float32), SR)  # silence: no division by zero
    assert long.size == (10 * SR // HOP, 64 * SPECTROGRAM_ROW_PX)


def test_studio_generates_caches_and_restores_image_guidance(app_model, image_file, tmp_path):
    studio = Studio("cpu", tmp_path / "out")
    steps: list[tuple[int, int]] = []
    args = form_args(str(image_file), "calm piano", seconds="0.5", steps="2", seed="3", num_samples=2)
    args.model = str(app_model)
    args.image_guidance = "off"
    samples, notes = studio.generate(args, lambda done, total: steps.append((done, total)))
    assert steps == [(1, 2), (2, 2)] and notes == []
    for i, s in enumerate(samples):
        audio, sr = sf.read(s.audio)
        assert sr == SR and audio.shape == (SR // 2,)
        assert json.loads(Path(s.audio).with_suffix(".json").read_text()) == s.sidecar
        assert s.sidecar["command"] == "melfusion app" and s.sidecar["sample_index"] == i
        assert s.sidecar["seed"] == 3 and s.sidecar["image_guidance_scale"] is None
        assert Path(s.spectrogram).is_file()
    pipe = studio.pipeline(str(app_model))[0]
    # The next request on the cached pipeline gets the model's default back; a long clip is announced
    args = form_args(str(image_file), "calm piano", seconds="1", steps="1", seed="3", model=str(app_model))
    samples, notes = studio.generate(args)
    assert studio.pipeline(str(app_model))[0] is pipe and samples[0].sidecar["image_guidance_scale"] == 3.0
    assert notes == [
        "1 s is longer than the model's 0.64 s window: the clip is made window by window and crossfaded"
    ]


def test_studio_runs_art2mus_models(image_file, tmp_path):
    from melfusion.pipelines.art2mus import Art2MusPipeline, build_tiny_art2mus_components

    Art2MusPipeline(**build_tiny_art2mus_components()).save_pretrained(tmp_path / "art2mus")
    steps: list[tuple[int, int]] = []
    args = form_args(
        str(image_file), "calm piano", seconds="1", steps="2", seed="1", model=str(tmp_path / "art2mus")
    )
    samples, notes = Studio("cpu", tmp_path / "out").generate(
        args, lambda done, total: steps.append((done, total))
    )
    assert steps == [(1, 2), (2, 2)] and notes == [] and samples[0].sidecar["audio_samples"] == SR


def test_app_without_gradio_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio → ImportError
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert err == "melfusion app: error: melfusion app needs gradio: pip install 'melfusion[app]'\n"


# ------------------------------------------------------------------------------------------ the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def app_server(app_model, tmp_path_factory):
    """`melfusion app --model <tiny>` in a subprocess; yields (url, process)."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "GRADIO_TEMP_DIR": str(root / "gradio"),
    }
    log = open(root / "app.log", "w")  # noqa: SIM115 (closed at teardown)
    cmd = [sys.executable, "-m", "melfusion.cli", "app", "--model", str(app_model), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--device", "cpu", "--out-dir", str(root / "clips")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"melfusion app did not start:\n{(root / 'app.log').read_text()}")
            time.sleep(0.5)
    yield url, proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("MELFUSION_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_app_in_a_browser(app_server, tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (scripts/install_system_deps.sh installs it as root)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
    )
    url, proc = app_server
    picture, notes = tmp_path / "photo.png", tmp_path / "notes.txt"
    make_image().save(picture)
    notes.write_text("not an image")
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on(
            "request",
            lambda r: (
                outside.append(r.url) if r.url.split(":")[0] in WEB and not r.url.startswith(url) else None
            ),
        )
        page.goto(url)
        page.wait_for_selector("#generate", timeout=60_000)

        # A clip: upload, prompt, settings, generate; the page offers a WAV of the asked length
        page.set_input_files("#image input[type=file]", picture)
        page.locator("#prompt textarea").fill("a calm piano piece")
        page.get_by_label("Seconds").fill("0.5")
        page.get_by_label("Steps").fill("3")
        page.get_by_label("Seed").fill("7")
        page.locator("#generate").click()
        link = page.wait_for_selector('a[download$=".wav"]', timeout=120_000)
        response = page.request.get(link.get_attribute("href"))
        assert response.ok
        audio, sr = sf.read(io.BytesIO(response.body()))
        assert sr == SR and abs(len(audio) - SR // 2) <= HOP
        page.wait_for_selector('img[src$=".png"]')  # the spectrogram
        assert page.get_by_text("melfusion app").count() >= 1  # the sidecar's "command"
        shot = artifacts_dir() / "app_result.png"
        page.screenshot(path=shot, full_page=True)
        print(f"screenshot: {shot}")

        # Bad input: the CLI's one-line message in the page, and the server goes on
        page.reload()
        page.wait_for_selector("#generate")
        page.set_input_files("#image input[type=file]", notes)
        page.locator("#prompt textarea").fill("a calm piano piece")
        page.locator("#generate").click()
        text = page.wait_for_selector("text=not an image file", timeout=30_000).inner_text()
        assert text == "not an image file: notes.txt (give a PNG, JPEG, WebP or another format Pillow reads)"
        page.wait_for_timeout(1000)  # the message fades in
        shot = artifacts_dir() / "app_error.png"
        page.screenshot(path=shot)  # the viewport: the message is pinned to it
        print(f"screenshot: {shot}")
        browser.close()
    assert proc.poll() is None, "the server stopped after a bad input"
    urllib.request.urlopen(url, timeout=5).close()
    assert outside == [], f"the page reached outside this machine: {outside}"
