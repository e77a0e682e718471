from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from melfusion.cli import main
from melfusion.data.cache import FeatureCache
from melfusion.evaluation import EvaluationOptions, evaluate, markdown_table, write_report
from melfusion.evaluation.manifest import read_manifest
from melfusion.evaluation.runner import EmbeddingStore


def _opts(**kw: object) -> EvaluationOptions:
    return EvaluationOptions(progress=False, **kw)  # type: ignore[arg-type]


def test_cli_writes_json_markdown_and_pngs(
    dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    out = tmp_path / "report"
    argv = [
        "evaluate", "--generated", str(dataset["good"]), f"noisy={dataset['noisy']}",
        "--reference", str(dataset["ref"]), "--manifest", str(dataset["manifest"]),
        "--metrics", "fad,fd,kl", "isc", "clap", "imsm", "spectral_kl",
        "--out", str(out), "--tiny-embedders", "--cache-dir", str(tmp_path / "cache"), "--baseline", "noisy",
    ]  # fmt: skip
    assert main(argv) == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "report.json",
        "report.md",
        "bars_fad.png",
        "bars_imsm.png",
        "imsm_good.png",
        "imsm_noisy.png",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    doc = json.loads((out / "report.json").read_text())
    good, noisy = doc["runs"]["good"], doc["runs"]["noisy"]
    assert set(good["metrics"]) >= {
        "fad",
        "fd",
        "kl_softmax",
        "kl_sigmoid",
        "isc",
        "clap_score",
        "imsm",
        "spectral_kl",
    }
    assert good["metrics"]["fad"] < noisy["metrics"]["fad"]  # closer tones beat noise, even for random nets
    assert good["metrics"]["spectral_kl"] < noisy["metrics"]["spectral_kl"]
    # pairing mismatches are reported: noisy/ has 5 of the 6 names plus extra.wav
    assert noisy["details"]["pairing"]["matched"] == 5
    assert noisy["details"]["pairing"]["unmatched_generated"] == ["extra.wav"]
    assert noisy["details"]["pairing"]["unmatched_reference"] == ["clip5.wav"]
    assert any("5 pairs matched" in n for n in noisy["notes"])
    assert noisy["details"]["imsm"]["n_triplets"] == 5 and len(noisy["details"]["imsm"]["matrix"]) == 5
    md = (out / "report.md").read_text()
    assert "| Model | FAD ↓ | KL ↓ | FD ↓ | IMSM ↑ |" in md and "Δ good − noisy" in md and "Tiny random" in md
    printed = capsys.readouterr()
    assert "| good |" in printed.out and "extra.wav" in printed.err
    # second run: every embedding comes from the content-hash cache
    assert main(argv) == 0
    doc2 = json.loads((out / "report.json").read_text())
    assert doc2["options"]["embeddings_computed"] == 0 and doc2["options"]["cache_hits"] > 0
    assert doc2["runs"]["good"]["metrics"]["fad"] == pytest.approx(good["metrics"]["fad"])


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--metrics", "nope"], "unknown metric 'nope'"),
        (["--metrics", "clap"], "needs --manifest"),
        (["--baseline", "missing"], "--baseline 'missing'"),
    ],
)
def test_cli_input_errors_are_one_line(dataset, tmp_path, capsys, extra, message) -> None:  # noqa: ANN001
    argv = ["evaluate", "--generated", str(dataset["good"]), "--reference", str(dataset["ref"])]
    argv += [
        "--out",
        str(tmp_path / "o"),
        "--tiny-embedders",
        "--no-cache",
        "--metrics",
        "spectral_kl",
        *extra,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("melfusion evaluate: error:") and message in err and "\n" not in err


def test_cli_missing_folder(tmp_path, capsys) -> None:  # noqa: ANN001
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [
        "evaluate",
        "--generated",
        str(empty),
        "--reference",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "is not a folder of audio files" in capsys.readouterr().err


def test_embedding_cache_is_keyed_by_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, np.zeros(100, np.float32), 16000)
    shutil.copy(a, b)
    store = EmbeddingStore(FeatureCache(tmp_path / "cache"), progress=False)
    calls = []

    def compute(idx):
        calls.append(list(idx))
        return [{"frames": np.full((2, 3), float(i))} for i in idx]

    first = store._run("emb-x", [store.sha(a)], compute, "x")
    fresh = EmbeddingStore(FeatureCache(tmp_path / "cache"), progress=False)  # a new process: the files only
    again = fresh._run("emb-x", [fresh.sha(b)], compute, "x")  # renamed copy: same content, same entry
    assert calls == [[0]] and np.array_equal(first[0]["frames"], again[0]["frames"])
    assert again[0]["frames"].dtype == np.float64
    sf.write(b, np.ones(100, np.float32) * 0.5, 16000)
    later = EmbeddingStore(FeatureCache(tmp_path / "cache"), progress=False)
    later._run("emb-x", [later.sha(b)], compute, "x")  # edited: recomputed
    later._run("emb-y", [later.sha(a)], compute, "x")  # another embedder
    assert len(calls) == 3 and not list((tmp_path / "cache").rglob("*.tmp*"))
    off = EmbeddingStore(FeatureCache(None), progress=False)
    off._run("emb-x", [off.sha(a)], compute, "x")
    assert len(calls) == 4


class _StubImageBind:
    """ImageBind stand-in with the same interface (paths in): band energies of audio, colour of images."""

    name = "imagebind"
    consumes_paths = True
    cache_id = "stub-imagebind"

    def embed_audio_files(self, paths: list[Path]) -> np.ndarray:
        out = []
        for p in paths:
            x, _ = sf.read(p, dtype="float32")
            spec = np.abs(np.fft.rfft(x[:8000]))[:4000]
            out.append(np.log1p(spec.reshape(8, -1).sum(1)))
        return np.array(out)

    def embed_image_files(self, paths: list[Path]) -> np.ndarray:
        from PIL import Image

        return np.array(
            [np.tile(np.asarray(Image.open(p).convert("RGB"), float).mean((0, 1)), 3)[:8] for p in paths]
        )


def test_ibsc_with_an_injected_embedder(dataset, tiny_embedders) -> None:  # noqa: ANN001
    rep = evaluate(
        {"good": dataset["good"], "noisy": dataset["noisy"]},
        dataset["ref"],
        manifest=dataset["manifest"],
        options=_opts(metrics=["ibsc"]),
        embedders={"imagebind": _StubImageBind()},
    )
    good, noisy = rep.runs
    assert good.metrics["ibsc_music"] > noisy.metrics["ibsc_music"]
    assert -1.0 <= good.metrics["ibsc_image"] <= 1.0
    assert "IBSc (GtMus–GeMus)" in markdown_table(rep)


def test_fad_inf_and_text_only_manifest(dataset, tiny_embedders, tmp_path: Path) -> None:  # noqa: ANN001
    manifest = tmp_path / "prompts.csv"
    manifest.write_text("file,caption\n" + "".join(f"clip{i}.wav,tune {i}\n" for i in range(6)))
    assert not read_manifest(manifest).has_images
    rep = evaluate(
        [dataset["good"]],
        dataset["ref"],
        manifest=manifest,
        options=_opts(metrics=None),  # defaults: audio metrics + clap (no images → no imsm)
        embedders=tiny_embedders,
    )
    assert set(rep.metrics) == {"fad", "fd", "kl", "isc", "clap"}
    rep2 = evaluate(
        [dataset["good"]], dataset["ref"], options=_opts(metrics=["fad_inf"]), embedders=tiny_embedders
    )
    assert rep2.runs[0].metrics["fad_inf"] is not None and "fad" in rep2.runs[0].metrics
    paths = write_report(rep2, tmp_path / "r2")
    assert {p.name for p in paths} >= {"report.json", "report.md", "bars_fad_inf.png"}


def test_project_manifest_ids_pair_too(dataset, tmp_path: Path) -> None:  # noqa: ANN001
    manifest = tmp_path / "m.jsonl"
    rows = [{"id": f"item{i}", "audio": f"wav/clip{i}.wav", "image": "x.png", "text": "t"} for i in range(3)]
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    man = read_manifest(manifest)
    assert man.lookup("clip1") is not None and man.lookup("item2") is man.rows["clip2"]


def test_cli_without_weights_names_the_missing_file(dataset, tmp_path, capsys, monkeypatch) -> None:  # noqa: ANN001
    import torch

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MELFUSION_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    argv = ["evaluate", "--generated", str(dataset["good"]), "--reference", str(dataset["ref"]), "--offline"]
    argv += [
        "--out",
        str(tmp_path / "o"),
        "--no-cache",
        "--metrics",
        "fad",
        "--weights-dir",
        str(tmp_path / "w"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vggish-10086976.pth" in err and str(tmp_path / "w") in err


def test_uncomputable_metric_becomes_a_note(dataset, tiny_embedders, tmp_path: Path) -> None:  # noqa: ANN001
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(dataset["good"] / "clip0.wav", one / "clip0.wav")
    rep = evaluate(
        [one], dataset["ref"], options=_opts(metrics=["fd", "kl", "isc"]), embedders=tiny_embedders
    )
    run = rep.runs[0]
    assert run.metrics["fd"] is None and any("FD not computed: need at least 2" in n for n in run.notes)
    assert run.metrics["kl_softmax"] is not None and run.metrics["isc"] is not None
    write_report(rep, tmp_path / "r")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| Model | KL ↓ | FD ↓ | IS ↑ |" in md and " | - | " in md
    assert "clap" not in rep.embedders  # only the embedders used are listed
