"""Scores to Standard MIDI Files (type 1): `mido` when it is installed, else a small writer here.

Both produce the same events: track 0 holds the tempo and time signature; each score track becomes one
MIDI track with a program change (not on the drum channel 9), a volume (CC 7) and its notes. Several
scores can be laid one after the other (`segments`), each followed by all-sound-off, so one FluidSynth
run can render a batch of clips; times are then written against a fixed 120 bpm (960 ticks per second).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from melfusion.recipes.embedded.synth.score import Score
from melfusion.utils.files import atomic_path

TICKS_PER_BEAT = 480
_TRACK_VOLUME = {"melody": 110, "chords": 84, "bass": 100, "drums": 100}

# An event: (tick, order, raw bytes without the delta time). `order` sorts simultaneous events:
# controller/program changes first, then note-offs, then note-ons, then the end-of-segment resets.
Event = tuple[int, int, bytes]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    if value < 0:
        raise ValueError("negative delta time")
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _events(
    segments: Sequence[tuple[Score, float]], seconds_to_tick: Callable[[float], int]
) -> list[list[Event]]:
    """[events of MIDI track k] for scores placed at the given start times (s)."""
    n_tracks = max(len(score.tracks) for score, _ in segments)
    tracks: list[list[Event]] = [[] for _ in range(n_tracks)]
    for score, offset in segments:
        spb = score.seconds_per_beat
        seg_end = seconds_to_tick(offset + score.seconds)
        for k, track in enumerate(score.tracks):
            ch = track.channel & 0x0F
            ev = tracks[k]
            t0 = seconds_to_tick(offset)
            if ch != 9:
                ev.append((t0, 0, bytes([0xC0 | ch, track.program & 0x7F])))
            ev.append((t0, 0, bytes([0xB0 | ch, 7, _TRACK_VOLUME.get(track.name, 100)])))
            notes = sorted(track.notes, key=lambda n: (n.start, n.pitch))
            next_on: dict[int, int] = {}
            spans = []
            for note in reversed(notes):  # cut a note where the next one of the same pitch starts
                on = seconds_to_tick(offset + note.start * spb)
                off = min(seconds_to_tick(offset + (note.start + note.duration) * spb), seg_end)
                if note.pitch in next_on:
                    off = min(off, next_on[note.pitch])
                next_on[note.pitch] = on
                spans.append((on, max(off, on + 1), note))
            for on, off, note in reversed(spans):
                ev.append((on, 2, bytes([0x90 | ch, note.pitch & 0x7F, max(1, min(127, note.velocity))])))
                ev.append((off, 1, bytes([0x80 | ch, note.pitch & 0x7F, 0])))
            ev.append((seg_end, 3, bytes([0xB0 | ch, 120, 0])))  # all sound off
            ev.append((seg_end, 3, bytes([0xB0 | ch, 121, 0])))  # reset controllers
    return tracks


def _track_chunk(events: list[Event], end_tick: int) -> bytes:
    body = bytearray()
    last = 0
    running = None  # running status, as mido writes it: a repeated channel status byte is left out
    for tick, _, data in sorted(events, key=lambda e: (e[0], e[1])):
        body += _vlq(tick - last)
        if data[0] == running:
            body += data[1:]
        else:
            body += data
        running = data[0] if data[0] < 0xF0 else None
        last = tick
    body += _vlq(max(0, end_tick - last)) + b"\xff\x2f\x00"
    return b"MTrk" + len(body).to_bytes(4, "big") + bytes(body)


def _timing(
    segments: Sequence[tuple[Score, float]], seconds_grid: bool = False
) -> tuple[int, Callable[[float], int]]:
    """(microseconds per beat, seconds -> tick): the score's own tempo for one score at 0 s, else (or
    with `seconds_grid`) 120 bpm, i.e. 960 ticks per second."""
    if len(segments) == 1 and segments[0][1] == 0.0 and not seconds_grid:
        us_per_beat = int(round(60e6 / segments[0][0].bpm))
    else:
        us_per_beat = 500_000  # 120 bpm: 960 ticks per second
    ticks_per_second = TICKS_PER_BEAT * 1e6 / us_per_beat
    return us_per_beat, lambda seconds: int(round(seconds * ticks_per_second))


def midi_bytes(segments: Score | Sequence[tuple[Score, float]], *, seconds_grid: bool = False) -> bytes:
    """The SMF bytes of one score, or of several (score, start second) segments, with the writer here.
    `seconds_grid`: write at 120 bpm even for one score (the same ticks as in any batch)."""
    if isinstance(segments, Score):
        segments = [(segments, 0.0)]
    us_per_beat, to_tick = _timing(segments, seconds_grid)
    tracks = _events(segments, to_tick)
    end_tick = max(to_tick(offset + score.seconds) for score, offset in segments)
    tempo_track: list[Event] = [
        (0, 0, b"\xff\x51\x03" + us_per_beat.to_bytes(3, "big")),
        (0, 0, b"\xff\x58\x04\x04\x02\x18\x08"),  # 4/4
    ]
    chunks = [_track_chunk(tempo_track, end_tick)] + [_track_chunk(ev, end_tick) for ev in tracks]
    header = b"MThd" + (6).to_bytes(4, "big") + (1).to_bytes(2, "big")
    header += len(chunks).to_bytes(2, "big") + TICKS_PER_BEAT.to_bytes(2, "big")
    return header + b"".join(chunks)


def _mido_bytes(segments: Sequence[tuple[Score, float]], seconds_grid: bool = False) -> bytes:
    import mido

    us_per_beat, to_tick = _timing(segments, seconds_grid)
    tracks = _events(segments, to_tick)
    end_tick = max(to_tick(offset + score.seconds) for score, offset in segments)
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    tempo = [
        mido.MetaMessage("set_tempo", tempo=us_per_beat, time=0),
        mido.MetaMessage("time_signature", numerator=4, denominator=4, clocks_per_click=24, time=0),
    ]
    for k, events in enumerate([None, *tracks]):
        track = mido.MidiTrack(tempo if k == 0 else [])
        last = 0
        for tick, _, data in sorted(events or [], key=lambda e: (e[0], e[1])):
            track.append(mido.Message.from_bytes(data, time=tick - last))
            last = tick
        track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last)))
        mid.tracks.append(track)
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def have_mido() -> bool:
    try:
        import mido  # noqa: F401
    except ImportError:
        return False
    return True


def write_midi(
    path: str | os.PathLike[str],
    segments: Score | Sequence[tuple[Score, float]],
    *,
    use_mido: bool | None = None,
    seconds_grid: bool = False,
) -> Path:
    """Write a score (or several segments) as a .mid file, atomically. `use_mido`: None = when installed."""
    if isinstance(segments, Score):
        segments = [(segments, 0.0)]
    if use_mido is None:
        use_mido = have_mido()
    data = (
        _mido_bytes(segments, seconds_grid) if use_mido else midi_bytes(segments, seconds_grid=seconds_grid)
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
