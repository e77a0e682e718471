"""Pair generated and reference files by name (audioldm_eval pairs by file name; we pair by stem)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath


def pair_key(name: str) -> str:
    """The pairing key of a file: its stem, so `a.wav` pairs with `a.flac`."""
    return PurePath(name).stem


@dataclass(frozen=True)
class Pairing:
    """Which generated items found a partner, and which did not."""

    pairs: list[tuple[int, int]]  # (index in generated, index in reference)
    keys: list[str]  # the key of each pair
    unmatched_generated: list[str] = field(default_factory=list)
    unmatched_reference: list[str] = field(default_factory=list)
    n_generated: int = 0
    n_reference: int = 0

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)

    def summary(self, what: str = "pairs", reference: str = "reference") -> str:
        """One line: how many pairs matched and examples of what did not."""
        line = f"{self.n_pairs} {what} matched ({self.n_generated} generated, {self.n_reference} {reference})"
        if self.unmatched_generated:
            ex = ", ".join(self.unmatched_generated[:3])
            line += f"; {len(self.unmatched_generated)} generated without a partner (e.g. {ex})"
        if self.unmatched_reference:
            ex = ", ".join(self.unmatched_reference[:3])
            line += f"; {len(self.unmatched_reference)} {reference} without a partner (e.g. {ex})"
        return line

    def to_json(self) -> dict[str, object]:
        return {
            "matched": self.n_pairs,
            "generated": self.n_generated,
            "reference": self.n_reference,
            "unmatched_generated": list(self.unmatched_generated),
            "unmatched_reference": list(self.unmatched_reference),
        }


def pair_by_name(generated: Sequence[str], reference: Sequence[str]) -> Pairing:
    """Match names on `pair_key`. Duplicate keys on one side are an error (ambiguous pairing)."""
    for side, names in (("generated", generated), ("reference", reference)):
        seen: dict[str, str] = {}
        for name in names:
            key = pair_key(name)
            if key in seen:
                raise ValueError(f"two {side} files pair under one name {key!r}: {seen[key]} and {name}")
            seen[key] = name
    ref_index = {pair_key(n): i for i, n in enumerate(reference)}
    pairs: list[tuple[int, int]] = []
    keys: list[str] = []
    unmatched_gen: list[str] = []
    for i, name in enumerate(generated):
        key = pair_key(name)
        if key in ref_index:
            pairs.append((i, ref_index[key]))
            keys.append(key)
        else:
            unmatched_gen.append(name)
    gen_keys = {pair_key(n) for n in generated}
    unmatched_ref = [n for n in reference if pair_key(n) not in gen_keys]
    return Pairing(
        pairs=pairs,
        keys=keys,
        unmatched_generated=unmatched_gen,
        unmatched_reference=unmatched_ref,
        n_generated=len(generated),
        n_reference=len(reference),
    )
