"""Render scores with the `fluidsynth` program and a General-MIDI soundfont (Debian: `fluidsynth` plus
`fluid-soundfont-gm` or `timgm6mb-soundfont`; `scripts/install_system_deps.sh` installs them).

A batch of scores is written as one MIDI file, each clip followed by a gap of silence and an all-sound-off,
rendered by one `fluidsynth -F` run (the soundfont is loaded once), and cut back into clips. Chorus is
off; reverb is on (its tail fades within the gap). FluidSynth's output is deterministic for a given
batch, so the corpus generator always renders the same fixed groups of items together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from melfusion.errors import MelfusionInputError
from melfusion.recipes.embedded.synth.midi import write_midi
from melfusion.recipes.embedded.synth.numpy_render import finalize_mix
from melfusion.recipes.embedded.synth.score import Score

SOUNDFONT_ENV = "MELFUSION_SOUNDFONT"
FLUIDSYNTH_ENV = "MELFUSION_FLUIDSYNTH"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
)
GAP_SECONDS = 2.5  # silence after each clip in a batch: release and reverb tails die out in it
INSTALL_HINT = (
    "install them with `sudo scripts/install_system_deps.sh` (Debian/Ubuntu: apt-get install fluidsynth "
    "fluid-soundfont-gm), point MELFUSION_SOUNDFONT at a GM .sf2 file, or use --renderer numpy"
)


def find_fluidsynth() -> str | None:
    """The fluidsynth executable: $MELFUSION_FLUIDSYNTH, else `fluidsynth` on PATH."""
    override = os.environ.get(FLUIDSYNTH_ENV)
    if override:
        return override if Path(override).is_file() else None
    return shutil.which("fluidsynth")


def find_soundfont() -> Path | None:
    """A General-MIDI soundfont: $MELFUSION_SOUNDFONT, else the first of SOUNDFONT_CANDIDATES present."""
    override = os.environ.get(SOUNDFONT_ENV)
    if override:
        return Path(override) if Path(override).is_file() else None
    for candidate in SOUNDFONT_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def fluidsynth_available() -> bool:
    return find_fluidsynth() is not None and find_soundfont() is not None


def render_fluidsynth_batch(
    scores: Sequence[Score],
    sample_rate: int = 16000,
    *,
    soundfont: str | os.PathLike[str] | None = None,
    binary: str | None = None,
    gain: float = 0.5,
    timeout_s: float = 600.0,
) -> list[np.ndarray]:
    """Render several scores in one fluidsynth run; float32 (T,) clips, finished like `render_numpy`'s
    (RMS about -18 dBFS, peak <= 0.95, 20 ms fade-out) and exactly round(seconds * sample_rate) long."""
    if not scores:
        return []
    binary = binary or find_fluidsynth()
    sf2 = Path(soundfont) if soundfont else find_soundfont()
    if binary is None or sf2 is None or not sf2.is_file():
        missing = (
            "the fluidsynth program"
            if binary is None
            else f"a General-MIDI soundfont ({sf2 or 'none found'})"
        )
        raise MelfusionInputError(f"FluidSynth rendering needs {missing}; {INSTALL_HINT}")
    # Clips start on whole seconds: whole numbers of MIDI ticks and of fluidsynth's 64-sample blocks, so
    # a clip's events land on the same samples in any batch as when rendered alone.
    offsets, t = [], 0.0
    for score in scores:
        offsets.append(t)
        t += float(np.ceil(score.seconds + GAP_SECONDS))
    with tempfile.TemporaryDirectory(prefix="melfusion-fluidsynth-") as tmp:
        mid = write_midi(Path(tmp) / "batch.mid", list(zip(scores, offsets)), seconds_grid=True)
        raw = Path(tmp) / "batch.raw"
        cmd = [
            binary, "-n", "-i", "-q",
            "-g", f"{gain:g}",
            "-r", str(int(sample_rate)),
            "-o", "synth.chorus.active=0",
            "-o", "synth.reverb.active=1",
            "-o", "synth.lock-memory=0",
            "-o", "synth.dynamic-sample-loading=1",
            "-o", "synth.cpu-cores=1",
            "-T", "raw", "-O", "float", "-E", "little",
            "-F", str(raw),
            str(sf2), str(mid),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise MelfusionInputError(f"running {binary} failed ({err}); {INSTALL_HINT}") from err
        if proc.returncode != 0 or not raw.is_file():
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output file"]
            raise MelfusionInputError(f"fluidsynth exited with code {proc.returncode}: {detail[0]}")
        stereo = np.fromfile(raw, dtype="<f4")
    stereo = stereo[: len(stereo) // 2 * 2].reshape(-1, 2)  # (T, 2) interleaved
    mono = stereo.mean(axis=1).astype(np.float64)
    clips = []
    for score, offset in zip(scores, offsets):
        start = int(round(offset * sample_rate))
        n = int(round(score.seconds * sample_rate))
        clip = np.zeros(n)
        part = mono[start : start + n]
        clip[: len(part)] = part
        clips.append(finalize_mix(clip, sample_rate))
    return clips


def render_fluidsynth(score: Score, sample_rate: int = 16000, **kwargs) -> np.ndarray:
    """One score with fluidsynth (see `render_fluidsynth_batch`)."""
    return render_fluidsynth_batch([score], sample_rate, **kwargs)[0]
