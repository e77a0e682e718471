from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

import melfusion.evaluation.metrics.stateful as st
from melfusion.evaluation.metrics.stateful import (
    FrechetDistanceMetric,
    IMSMMetric,
    InceptionScoreMetric,
    PairedCosineMetric,
    PairedKLMetric,
)

RNG = np.random.default_rng(0)
GEN, REF = RNG.standard_normal((10, 4)), RNG.standard_normal((12, 4)) + 0.3
NAMES = [f"f{i}.wav" for i in range(10)]
EMB = [RNG.standard_normal((10, 3)) for _ in range(4)]


def _fill(metric: object, rows: slice) -> None:
    g, r, names = GEN[rows], REF[rows], NAMES[rows]
    if isinstance(metric, FrechetDistanceMetric):
        metric.update(generated=g, reference=r)
    elif isinstance(metric, PairedKLMetric):
        metric.update(names, generated_logits=g)
        metric.update(names, reference_logits=r[: len(names)])
    elif isinstance(metric, InceptionScoreMetric):
        metric.update(names, g)
    elif isinstance(metric, PairedCosineMetric):
        metric.update(names, g, r[: len(names)])
    elif isinstance(metric, IMSMMetric):
        metric.update(names, *(e[rows] for e in EMB))


def _compute(metric: object) -> object:
    if isinstance(metric, IMSMMetric):
        return metric.compute(clip_logit_scale=5.0, clap_logit_scale=5.0)
    return metric.compute()


def _value(out: object) -> np.ndarray:
    for attr in ("distance", "mean"):
        if hasattr(out, attr):
            return np.atleast_1d(getattr(out, attr))
    if hasattr(out, "result") and hasattr(out.result, "kl_softmax"):
        return np.array([out.result.kl_softmax, out.result.kl_sigmoid])
    return np.asarray(out.result.matrix)


@pytest.mark.parametrize(
    "cls", [FrechetDistanceMetric, PairedKLMetric, InceptionScoreMetric, PairedCosineMetric, IMSMMetric]
)
def test_two_rank_reduction_equals_single_process(cls, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    whole = cls()
    _fill(whole, slice(0, 10))
    expected = _value(_compute(whole))
    # rank 1 holds rows 6..9, rank 0 rows 0..5: record rank 1's gathered state, then let rank 0 see both
    rank1 = cls()
    _fill(rank1, slice(6, 10))
    recorded: list[object] = []
    monkeypatch.setattr(st, "gather_objects", lambda obj: recorded.append(obj) or [obj])
    _compute(rank1)
    rank0 = cls()
    _fill(rank0, slice(0, 6))
    states = iter(recorded)
    monkeypatch.setattr(st, "gather_objects", lambda obj: [obj, next(states)])
    np.testing.assert_allclose(_value(_compute(rank0)), expected, rtol=1e-10)


def test_duplicate_items_across_ranks_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    m = PairedCosineMetric()
    m.update(["a"], np.ones((1, 2)), np.ones((1, 2)))
    monkeypatch.setattr(st, "gather_objects", lambda obj: [obj, dict(obj)])
    with pytest.raises(ValueError, match="more than one process"):
        m.compute()


def test_real_process_group_of_one(tmp_path: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        m = FrechetDistanceMetric()
        m.update(generated=GEN, reference=REF)
        out = m.compute()
    finally:
        dist.destroy_process_group()
    single = FrechetDistanceMetric()
    single.update(generated=GEN, reference=REF)
    assert out.distance == pytest.approx(single.compute().distance, rel=1e-12)


@pytest.mark.slow
def test_two_real_processes(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            import numpy as np, torch.distributed as dist, torch.multiprocessing as mp
            from melfusion.evaluation.metrics.stateful import FrechetDistanceMetric, PairedKLMetric

            def work(rank):
                dist.init_process_group("gloo", init_method="file://{tmp_path / "store"}", rank=rank, world_size=2)
                rng = np.random.default_rng(0)
                g, r = rng.standard_normal((10, 4)), rng.standard_normal((10, 4)) + 0.3
                names = [f"f{{i}}" for i in range(10)][rank::2]
                fd, kl = FrechetDistanceMetric(), PairedKLMetric()
                fd.update(generated=g[rank::2], reference=r[rank::2])
                kl.update(names, generated_logits=g[rank::2], reference_logits=r[rank::2])
                print(rank, fd.compute().distance, kl.compute().result.kl_softmax, flush=True)
                dist.destroy_process_group()

            if __name__ == "__main__":
                mp.spawn(work, nprocs=2)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=os.environ
    )
    assert out.returncode == 0, out.stderr
    values = [tuple(map(float, line.split()[1:])) for line in out.stdout.splitlines() if line.strip()]
    assert len(values) == 2 and values[0] == pytest.approx(values[1])  # both ranks agree
    rng = np.random.default_rng(0)
    g, r = rng.standard_normal((10, 4)), rng.standard_normal((10, 4)) + 0.3
    fd, kl = FrechetDistanceMetric(), PairedKLMetric()
    fd.update(generated=g, reference=r)
    kl.update([f"f{i}" for i in range(10)], generated_logits=g, reference_logits=r)
    assert values[0] == pytest.approx((fd.compute().distance, kl.compute().result.kl_softmax), rel=1e-9)
