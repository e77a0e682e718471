"""Every command of the README, run as written on a fresh workspace (the offline ones), and its Python example.

The README's ```bash blocks are read line by line. A command whose trailing comment starts with "needs" needs
something that cannot be had offline (downloaded weights, GPUs): it must then fail with a one-line error
(exit 2) that says what is missing — or, for `accelerate launch`, it is only checked to be documented so. All
other commands must succeed in a workspace that holds the files the README names (photo.jpg, photos/,
train.jsonl, test.jsonl, refs/, art/, music/, configs/, examples/). Only the step counts of training runs are
cut (SPEEDUPS) so the suite stays short; the commands are otherwise unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from melfusion_testing import make_image, write_triplets

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SPEEDUPS = {
    "train.max_steps=2000": "train.max_steps=2 train.batch_size=2",
    "train.max_steps=20": "train.max_steps=2",
}
SELF = "bash scripts/test.sh"  # the suite itself (what .ci/run runs)


def fenced(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def commands() -> list[tuple[str, str]]:
    """(command, trailing comment) of every line of the README's bash blocks."""
    out = []
    for block in fenced("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.strip():
                continue
            command, _, comment = line.partition("  #")
            out.append((command.strip(), comment.strip()))
    return out


def test_the_readme_has_its_two_setup_commands_and_ci_runs_the_second():
    cmds = [c for c, _ in commands()]
    assert cmds[:2] == ["bash scripts/demo.sh", SELF]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp("readme")
    make_image(0).convert("RGB").save(ws / "photo.jpg")
    for folder, n in (("photos", 2), ("art", 3)):
        (ws / folder).mkdir()
        for i in range(n):
            make_image(10 + i).save(ws / folder / f"{i}.png")
    data = write_triplets(ws / "data", n=4, seconds=5.5)
    for name in ("train.jsonl", "test.jsonl"):
        rows = data.read_text().replace('"img', '"data/img').replace('"clip', '"data/clip')
        (ws / name).write_text(rows)
    (ws / "refs").mkdir()
    (ws / "music").mkdir()
    for i in range(4):
        shutil.copy(ws / "data" / f"clip{i}.wav", ws / "refs" / f"clip{i}.wav")
        shutil.copy(ws / "data" / f"clip{i}.wav", ws / "music" / f"track{i}.wav")
    shutil.copytree(ROOT / "configs", ws / "configs")
    shutil.copytree(ROOT / "examples", ws / "examples", ignore=shutil.ignore_patterns("output"))
    return ws


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_once(argv: list[str], cwd: Path) -> None:
    """`melfusion app`: it must answer HTTP on its port, then it is stopped."""
    port = _free_port()
    proc = subprocess.Popen([*argv, "--port", str(port)], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"melfusion app exited: {proc.stdout.read()[-2000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    assert r.status == 200
                    return
            except OSError:
                time.sleep(1)
        raise AssertionError("melfusion app did not answer within 180 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _run(command: str, comment: str, cwd: Path) -> None:
    for slow, fast in SPEEDUPS.items():
        command = command.replace(slow, fast)
    argv = shlex.split(command)
    if argv[:2] == ["melfusion", "app"]:
        return _serve_once(argv, cwd)
    if argv[0] == "bash":
        cwd = ROOT
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if comment.startswith("needs"):  # a clean one-line refusal that names what the comment says is needed
        assert proc.returncode == 2, (
            f"{command}: expected a clean refusal, got {proc.returncode}: {proc.stderr[-1500:]}"
        )
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"melfusion {argv[1]}: error: "), line
        wanted = [w for w in re.findall(r"[A-Za-z]{5,}", comment.removeprefix("needs")) if w != "downloaded"]
        assert any(w.lower() in line.lower() for w in wanted), (wanted, line)
        return None
    assert proc.returncode == 0, (
        f"{command} failed ({proc.returncode}):\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    )
    return None


@pytest.mark.parametrize("index", range(len(commands())), ids=[c[:60] for c, _ in commands()])
def test_readme_command_runs_as_written(workspace, index):
    command, comment = commands()[index]
    if command == SELF:
        pytest.skip("the test suite itself")
    if command.startswith("accelerate launch --multi_gpu"):
        assert comment.startswith("needs"), "a multi-GPU command must say what it needs"
        pytest.skip("needs several GPUs")
    _run(command, comment, workspace)


def test_readme_outputs_are_what_it_says(workspace):
    """After the commands above: the files they are documented to write exist with the documented content."""
    if not (workspace / "long.flac").exists():
        pytest.skip("checks the outputs of test_readme_command_runs_as_written; run the module")
    assert sf.info(workspace / "long.flac").duration == pytest.approx(30.0, abs=0.01)
    assert sorted(p.name for p in (workspace / "songs").glob("*.wav")) == ["0.wav", "1.wav"]
    assert (workspace / "runs" / "tiny" / "final" / "model_index.json").is_file()
    assert len(list((workspace / "gen").glob("*.wav"))) == 4
    assert (ROOT / "examples" / "output" / "lakeside.json").is_file()


def test_readme_python_example_runs_as_written(workspace):
    (code,) = fenced("python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=_env(), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, params = proc.stdout.strip().splitlines()
    assert shape == "(2, 160000) 16000" and params == "10.0 3"
