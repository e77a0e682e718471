from __future__ import annotations

import numpy as np
import pytest
import torch

from melfusion.encoders.base import hf_weights_location
from melfusion.evaluation.embedders import (
    ClapEmbedder,
    Cnn14,
    MissingWeightsError,
    PANNsEmbedder,
    VGGish,
    VGGishEmbedder,
)
from melfusion.evaluation.embedders.panns import STFT, LogmelFilterBank, slaney_mel_filterbank
from melfusion.evaluation.embedders.vggish import vggish_mel_matrix, waveform_to_examples

from .conftest import tone


def _isolate_weight_caches(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MELFUSION_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_full_size_module_names_match_official_checkpoints() -> None:
    with torch.device("meta"):
        vgg, cnn = VGGish(), Cnn14()
    vgg_shapes = {k: tuple(v.shape) for k, v in vgg.state_dict().items()}
    assert vgg_shapes == {
        "features.0.weight": (64, 1, 3, 3), "features.0.bias": (64,),
        "features.3.weight": (128, 64, 3, 3), "features.3.bias": (128,),
        "features.6.weight": (256, 128, 3, 3), "features.6.bias": (256,),
        "features.8.weight": (256, 256, 3, 3), "features.8.bias": (256,),
        "features.11.weight": (512, 256, 3, 3), "features.11.bias": (512,),
        "features.13.weight": (512, 512, 3, 3), "features.13.bias": (512,),
        "embeddings.0.weight": (4096, 12288), "embeddings.0.bias": (4096,),
        "embeddings.2.weight": (4096, 4096), "embeddings.2.bias": (4096,),
        "embeddings.4.weight": (128, 4096), "embeddings.4.bias": (128,),
    }  # fmt: skip
    cnn_shapes = {k: tuple(v.shape) for k, v in cnn.state_dict().items()}
    assert len(cnn_shapes) == 84
    assert cnn_shapes["spectrogram_extractor.stft.conv_real.weight"] == (257, 1, 512)
    assert cnn_shapes["spectrogram_extractor.stft.conv_imag.weight"] == (257, 1, 512)
    assert cnn_shapes["logmel_extractor.melW"] == (257, 64)
    assert cnn_shapes["bn0.running_var"] == (64,)
    assert cnn_shapes["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    assert cnn_shapes["conv_block1.bn2.num_batches_tracked"] == ()
    assert cnn_shapes["fc1.weight"] == (2048, 2048)
    assert cnn_shapes["fc_audioset.weight"] == (527, 2048)


def test_vggish_examples_and_mel_matrix() -> None:
    assert waveform_to_examples(np.zeros(16000 * 2)).shape == (2, 96, 64)
    assert waveform_to_examples(np.zeros(8000)).shape == (1, 96, 64)  # short clips pad to one example
    m = vggish_mel_matrix()
    assert m.shape == (257, 64) and np.all(m[0] == 0)
    # independent loop form of mel_features.spectrogram_to_mel_matrix
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    bins = mel(np.linspace(0, 8000, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    for i in range(64):
        lo, c, hi = edges[i : i + 3]
        col = np.maximum(0, np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)))
        col[0] = 0
        np.testing.assert_allclose(m[:, i], col, rtol=1e-12)


def test_vggish_tiny_is_pre_activation_per_example() -> None:
    emb = VGGishEmbedder.tiny()
    out = emb.embed_waveforms([tone(300, 2.1, 16000, 0.01, 0), tone(500, 1.0, 16000, 0.01, 1)])
    assert [o["frames"].shape for o in out] == [(2, 16), (1, 16)]
    assert (np.concatenate([o["frames"] for o in out]) < 0).any()  # no final ReLU


def test_panns_front_end_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    x = tone(440, 0.5, 16000, 0.05, 0)
    real, imag = STFT(512, 160)(torch.from_numpy(x)[None])
    ours = (real**2 + imag**2)[0, 0].numpy().T  # (F, T)
    ref = np.abs(librosa.stft(x, n_fft=512, hop_length=160, center=True, pad_mode="reflect")) ** 2
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3 * ref.max())
    mel = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=50, fmax=8000)
    np.testing.assert_allclose(slaney_mel_filterbank(16000, 512, 64, 50, 8000), mel, rtol=1e-5, atol=1e-8)
    spec = torch.rand(1, 1, 3, 257)
    lm = LogmelFilterBank(16000, 512, 64, 50, 8000)(spec)
    np.testing.assert_allclose(lm.numpy(), 10 * np.log10(np.maximum(spec.numpy() @ mel.T, 1e-10)), rtol=1e-4)


def test_panns_tiny_outputs_and_batching() -> None:
    emb = PANNsEmbedder.tiny(batch_size=2)
    waves = [tone(200 * (i + 1), 1.0, 16000, 0.02, i) for i in range(3)] + [tone(300, 0.1, 16000, 0.0, 9)]
    out = emb.embed_waveforms(waves)
    assert out[0]["embedding"].shape == (32,) and out[0]["logits"].shape == (16,)
    single = emb.embed_waveforms([waves[1]])[0]
    np.testing.assert_allclose(single["logits"], out[1]["logits"], rtol=1e-5, atol=1e-5)
    assert np.isfinite(out[3]["logits"]).all()  # 0.1 s clip padded to the minimum length


def test_checkpoints_load_through_the_real_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    _isolate_weight_caches(monkeypatch, tmp_path)
    weights = tmp_path / "weights"
    weights.mkdir()
    vgg = VGGishEmbedder.tiny(seed=3)
    torch.save(vgg.model.state_dict(), weights / "vggish-10086976.pth")
    cnn = PANNsEmbedder.tiny(seed=4)
    torch.save({"model": cnn.model.state_dict(), "iteration": 1}, weights / "Cnn14_16k_mAP=0.438.pth")
    vgg2 = VGGishEmbedder.from_pretrained(weights, config=vgg.model.config)
    cnn2 = PANNsEmbedder.from_pretrained(weights, config=cnn.model.config)
    x = [tone(330, 1.0, 16000, 0.01, 0)]
    np.testing.assert_allclose(
        vgg2.embed_waveforms(x)[0]["frames"], vgg.embed_waveforms(x)[0]["frames"], rtol=1e-6
    )
    np.testing.assert_allclose(
        cnn2.embed_waveforms(x)[0]["logits"], cnn.embed_waveforms(x)[0]["logits"], rtol=1e-6
    )
    assert vgg2.cache_id != vgg.cache_id  # file identity, not parameter hash


@pytest.mark.parametrize(
    "build,filename",
    [
        (lambda d: VGGishEmbedder.from_pretrained(d), "vggish-10086976.pth"),
        (lambda d: PANNsEmbedder.from_pretrained(d), "Cnn14_16k_mAP=0.438.pth"),
    ],
)
def test_missing_weights_error_is_one_actionable_line(tmp_path, monkeypatch, build, filename) -> None:  # noqa: ANN001
    _isolate_weight_caches(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError) as info:
        build(tmp_path / "weights")
    msg = str(info.value)
    assert "\n" not in msg and filename in msg and str(tmp_path / "weights") in msg and "https://" in msg


def test_missing_hub_weights_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError) as info:
        ClapEmbedder.from_pretrained("laion/clap-htsat-unfused", tmp_path / "w", allow_download=False)
    msg = str(info.value)
    assert (
        "\n" not in msg
        and "laion/clap-htsat-unfused" in msg
        and str(tmp_path / "w" / "clap-htsat-unfused") in msg
    )


def test_hub_folder_lookup(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "clip-vit-base-patch32").mkdir()
    (tmp_path / "clip-vit-base-patch32" / "config.json").write_text("{}")
    assert hf_weights_location("openai/clip-vit-base-patch32", tmp_path) == str(
        tmp_path / "clip-vit-base-patch32"
    )
    assert (
        hf_weights_location("openai/clip-vit-base-patch32", tmp_path / "nothing")
        == "openai/clip-vit-base-patch32"
    )


def test_tiny_clap_and_clip(tiny_embedders) -> None:  # noqa: ANN001
    clap, clip = tiny_embedders["clap"], tiny_embedders["clip"]
    long = tone(300, 3.0, 48000, 0.01, 0)  # longer than the tiny extractor's 2 s: rand_trunc crop
    a = clap.embed_waveforms([long, tone(600, 0.5, 48000, 0.01, 1)])
    b = clap.embed_waveforms([long])
    np.testing.assert_allclose(a[0]["embedding"], b[0]["embedding"], rtol=1e-5)  # seeded crop
    assert np.linalg.norm(a[1]["embedding"]) == pytest.approx(1.0, rel=1e-5)
    t = clap.embed_texts(["a calm piano", "fast drums and bass"])
    assert t.shape == (2, 8) and clap.logit_scale > 0
    from PIL import Image

    img = Image.fromarray((np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8))
    e = clip.embed_images([img, img.convert("L")])  # greyscale becomes RGB
    assert e.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(clip.embed_texts(["x y", "z"]), axis=1), 1.0, rtol=1e-5)
