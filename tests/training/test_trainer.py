from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from melfusion_testing import TRAIN_BASE, write_triplets

from melfusion.errors import MelfusionInputError
from melfusion.training.config import load_config
from melfusion.training.loop import find_checkpoint
from melfusion.training.settings import parse_override
from melfusion.training.trainer import MeLFusionTrainer

BASE = TRAIN_BASE


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_triplets(tmp_path_factory.mktemp("data"), n=4, seconds=0.8)


def _config(manifest, out, *extra):
    return load_config(None, [f"data.train_manifest={manifest}", f"train.output_dir={out}", *BASE, *extra])


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_steps_change_only_trainable_parameters(manifest, tmp_path):
    trainer = MeLFusionTrainer(
        _config(
            manifest, tmp_path / "run", "train.max_steps=2", "train.ema_decay=null", "optim.lr_alpha=1e-2"
        )
    )
    pipe = trainer.pipe
    frozen = {n: _state(getattr(pipe, n)) for n in ("image_unet", "image_vae", "text_encoder", "vae")}
    unet0, alpha0 = _state(pipe.unet), pipe.synapse.alpha_logits.detach().clone()
    trainer.train()
    for name, before in frozen.items():
        after = getattr(pipe, name).state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), f"{name} changed"
    assert not pipe.image_unet.training and pipe.image_unet.conv_in.weight.grad is None
    assert any(not torch.equal(unet0[k], v) for k, v in pipe.unet.state_dict().items())
    assert not torch.equal(alpha0, pipe.synapse.alpha_logits)


def test_alpha_only_training_leaves_unet(manifest, tmp_path):
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "run",
            "train.max_steps=2",
            "train.train_unet=false",
            "optim.lr_alpha=1e-2",
            "train.image_dropout=0",
        )
    )
    unet0 = _state(trainer.pipe.unet)
    trainer.train()
    assert all(torch.equal(unet0[k], v) for k, v in trainer.pipe.unet.state_dict().items())
    assert torch.all(trainer.pipe.synapse.alpha_logits != 0)


def test_loss_falls_when_overfitting_four_triplets(manifest, tmp_path):
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "run",
            "train.max_steps=80",  # validation noise is now fixed (generator): 40 steps reach 0.64x, 80 0.57x
            "optim.lr_unet=2e-3",
            "optim.lr_alpha=1e-2",
            "train.text_dropout=0",
            "train.image_dropout=0",
            "train.ema_decay=null",
            f"data.val_manifest={manifest}",
            "data.random_crop=false",
        )
    )
    before = trainer.validation_loss()
    trainer.train()
    after = trainer.validation_loss()
    assert after < 0.6 * before, (before, after)


def test_resume_latest_without_a_checkpoint_fails_before_any_model_is_built(manifest, tmp_path, capsys):
    from melfusion.cli import main

    argv = ["train", f"data.train_manifest={manifest}", f"train.output_dir={tmp_path / 'run'}", *BASE]
    assert main([argv[0], "--resume", "latest", *argv[1:]]) == 2
    assert "no checkpoint under" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing built, no feature cache


def test_resume_matches_uninterrupted_run(manifest, tmp_path, capsys):
    common = ["train.checkpoint_every=2", "train.ema_decay=0.9", "optim.lr_unet=1e-3", "optim.lr_alpha=1e-2"]
    full = MeLFusionTrainer(_config(manifest, tmp_path / "full", "train.max_steps=4", *common))
    full.train()
    first = MeLFusionTrainer(_config(manifest, tmp_path / "split", "train.max_steps=2", *common))
    first.train()
    assert find_checkpoint(tmp_path / "split", "latest").name == "step-0000002"
    del first
    second = MeLFusionTrainer(_config(manifest, tmp_path / "split", "train.max_steps=4", *common))
    capsys.readouterr()
    second.train(resume="latest")
    assert second.global_step == 4
    assert "resumed from " in (out := capsys.readouterr().out) and "step-0000002 at step 2" in out
    for (name, a), b in zip(full.pipe.unet.named_parameters(), second.pipe.unet.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name
    assert torch.allclose(full.pipe.synapse.alpha_logits, second.pipe.synapse.alpha_logits, atol=1e-7)
    for a, b in zip(full.ema.shadow_params, second.ema.shadow_params):
        assert torch.allclose(a, b, atol=1e-6)
    ckpt = tmp_path / "split" / "checkpoints" / "step-0000004"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and (ckpt / "model.safetensors").exists()
    assert not list((tmp_path / "split" / "checkpoints").glob(".*.tmp"))


def test_export_loads_as_pipeline(manifest, tmp_path):
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    trainer = MeLFusionTrainer(
        _config(manifest, tmp_path / "run", "train.max_steps=1", "optim.lr_alpha=1e-2")
    )
    trainer.train()
    path = trainer.export()
    assert not (path / "image_text_encoder").exists()  # ∅ is stored in the synapse: no second encoder copy
    pipe = MeLFusionPipeline.from_pretrained(path)
    assert pipe.image_text_encoder is None and pipe.synapse.image_null_prompt_embeds is not None
    ema_alpha = trainer.ema.shadow_params[-1]
    assert torch.allclose(pipe.synapse.alpha_logits, ema_alpha)
    out = pipe(trainer.train_set.records[0].images[0], "calm", num_inference_steps=2, progress=False)
    assert out.audios.shape[0] == 1


def test_bad_items_are_skipped_and_counted(tmp_path):
    manifest = write_triplets(tmp_path / "data", n=4, seconds=0.8)
    (tmp_path / "data" / "clip3.wav").write_bytes(b"not audio at all")  # corrupt, found at read time
    (tmp_path / "data" / "clip2.wav").unlink()  # missing, dropped at construction
    trainer = MeLFusionTrainer(_config(manifest, tmp_path / "run", "train.max_steps=3"))
    assert len(trainer.train_set) == 3
    history = trainer.train()
    assert history[-1]["step"] == 3 and history[-1]["skipped_items"] >= 1


def test_no_usable_item_is_a_clear_error(tmp_path):
    manifest = write_triplets(tmp_path / "data", n=2, seconds=0.8)
    for p in (tmp_path / "data").glob("*.wav"):
        p.unlink()
    with pytest.raises(MelfusionInputError, match="no usable item"):
        MeLFusionTrainer(_config(manifest, tmp_path / "run", "train.max_steps=1"))


def _labelled(manifest: Path, moods: list[tuple[str, str, str]], name: str = "labelled.jsonl") -> Path:
    """A copy of the manifest with (pair, mode, tempo_class) fields on its rows."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for row, (pair, mode, tempo) in zip(rows, moods, strict=True):
        row.update(pair=pair, mode=mode, tempo_class=tempo)
    out = manifest.with_name(name)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_balanced_epochs_draw_a_mood_balanced_subset_and_train(tmp_path):
    moods = [
        ("a", "major", "slow"), ("a", "minor", "fast"), ("a", "minor", "slow"),  # (major, fast) held out
        ("b", "minor", "fast"), ("b", "minor", "slow"),  # no major: cannot be balanced
        ("c", "major", "fast"), ("c", "minor", "slow"),
    ]  # fmt: skip
    manifest = _labelled(write_triplets(tmp_path / "data", n=len(moods), seconds=0.8), moods)
    balance = ["data.balance_within=[pair]", "data.balance_over=[mode,tempo_class]"]
    trainer = MeLFusionTrainer(_config(manifest, tmp_path / "run", "train.max_steps=2", *balance))
    assert trainer.config.data.balance_over == ["mode", "tempo_class"]
    drawn = sorted(int(trainer.train_set.records[i].id[4:]) for i in trainer.sampler)
    assert drawn == [0, 1, 5, 6]  # a: the (major, slow) / (minor, fast) diagonal; b left out; c whole
    assert len(trainer.loader) == 2
    assert trainer.sampler_summary.startswith(
        "balanced epochs: 4 of 7 training items per epoch; 1 of 3 groups"
    )
    assert trainer.train()[-1]["step"] == 2
    one_mode_each = _labelled(manifest, [(m, m, t) for _, m, t in moods], name="one-mode-each.jsonl")
    with pytest.raises(MelfusionInputError, match="no group .* can be balanced"):
        MeLFusionTrainer(_config(one_mode_each, tmp_path / "r2", *balance))
    with pytest.raises(MelfusionInputError, match="has no field 'genre'"):
        MeLFusionTrainer(
            _config(manifest, tmp_path / "r3", "data.balance_within=[genre]", "data.balance_over=[mode]")
        )
    with pytest.raises(MelfusionInputError, match="balance_over is empty"):
        load_config(None, ["data.train_manifest=x", "data.balance_within=[pair]"]).validate()


def test_config_file_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "train:\n  max_steps: 7\n  min_snr_gamma: 5\ndata:\n  train_manifest: t.jsonl\n"
        "optim:\n  lr_alpha: 1.0e-5\n"
    )
    cfg = load_config(cfg_file, ["train.max_steps=9", "train.ema_decay=null", "train.mixed_precision=bf16"])
    assert cfg.train.max_steps == 9 and cfg.train.min_snr_gamma == 5 and cfg.train.ema_decay is None
    assert cfg.optim.lr_alpha == 1e-5 and cfg.train.mixed_precision == "bf16"
    assert parse_override("data.val_manifest=v.jsonl") == ("data.val_manifest", "v.jsonl")
    assert load_config(None, ["train.mixed_precision=no"]).train.mixed_precision == "no"  # not YAML's False
    for bad, msg in [
        ("train.nope=1", "has no setting"),
        ("nosection.x=1", "unknown setting"),
        ("train.max_steps=abc", "must be a number"),
        ("train.max_steps=1.5", "integer"),
        ("train.train_unet=maybe", "true or false"),
        ("train.max_steps", "section.key=value"),
    ]:
        with pytest.raises(MelfusionInputError, match=msg):
            load_config(None, [bad])
    with pytest.raises(MelfusionInputError, match="train_manifest is not set"):
        load_config(None, []).validate()
    with pytest.raises(MelfusionInputError, match="nothing to train"):
        load_config(
            None, ["data.train_manifest=x", "train.train_unet=false", "train.train_alpha=false"]
        ).validate()


def test_min_snr_weights():
    from diffusers import DDPMScheduler

    from melfusion.training.losses import min_snr_weights

    s = DDPMScheduler(prediction_type="epsilon")
    t = torch.tensor([0, 500, 999])
    w = min_snr_weights(s, t, 5.0)
    alpha = s.alphas_cumprod[t]
    snr = alpha / (1 - alpha)
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr)
    assert w[0] < 1e-2 and w[2] == 1.0
    sv = DDPMScheduler(prediction_type="v_prediction")
    assert torch.allclose(min_snr_weights(sv, t, 5.0), torch.clamp(snr, max=5.0) / (snr + 1))


@pytest.mark.skipif(sys.platform != "linux", reason="gloo multi-process test runs on linux")
def test_two_process_cpu_run_keeps_ranks_in_sync(manifest, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "check_sync.py"
    script.write_text(
        "import sys, torch\n"
        "from melfusion.training.config import load_config\n"
        "from melfusion.training.trainer import MeLFusionTrainer\n"
        "t = MeLFusionTrainer(load_config(None, sys.argv[1:]))\n"
        "assert t.accelerator.num_processes == 2, t.accelerator.distributed_type\n"
        "t.train()\n"
        "vec = torch.nn.utils.parameters_to_vector(t._trainable_parameters()).detach()\n"
        "torch.save(vec, f'{t.output_dir}/rank{t.accelerator.process_index}.pt')\n"
        "t.accelerator.end_training()\n"
    )
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # accelerate's CPU multi-process path: torchrun-style launcher + ACCELERATE_USE_CPU → MULTI_CPU over gloo
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [
            accelerate,
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "29533",
            str(script),
            f"data.train_manifest={manifest}",
            f"train.output_dir={out}",
            *BASE,
            "train.max_steps=2",
            "optim.lr_alpha=1e-2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    assert torch.equal(a, b)


def test_validation_writes_samples_and_spectrograms(manifest, tmp_path):
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "run",
            "train.max_steps=2",
            "train.validate_every=2",
            f"data.val_manifest={manifest}",
            "train.num_validation_samples=2",
            "train.validation_inference_steps=2",
        )
    )
    trainer.train()
    out = tmp_path / "run" / "validation" / "step-0000002"
    wavs, pngs = sorted(out.glob("*.wav")), sorted(out.glob("*.png"))
    assert len(wavs) == 2 and len(pngs) == 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and {"val_loss", "val_loss_no_image", "alpha_0"} <= set(metrics)
    assert metrics["val_image_gain"] == pytest.approx(metrics["val_loss_no_image"] - metrics["val_loss"])
    assert json.loads(wavs[0].with_suffix(".json").read_text())["step"] == 2
    assert trainer.pipe.unet.training  # back in training mode afterwards


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state (mixed precision included): reset around a test that changes it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_and_gradient_checkpointing_run(manifest, tmp_path, fresh_accelerate_state):
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "run",
            "train.max_steps=1",
            "train.mixed_precision=bf16",
            "train.gradient_checkpointing=true",
            "train.min_snr_gamma=5",
            "train.batch_size=1",
        )
    )
    history = trainer.train()
    assert trainer.pipe.unet.is_gradient_checkpointing and trainer.accelerator.mixed_precision == "bf16"
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["loss"]))


def test_precompute_fills_cache_once_and_training_reads_it(manifest, tmp_path):
    trainer = MeLFusionTrainer(
        _config(manifest, tmp_path / "run", "train.max_steps=2", "data.random_crop=false")
    )
    assert trainer.precompute(batch_size=3) == 4  # every image inverted, in batches

    def files():
        return {
            kind: sorted(
                p.name for p in trainer.cache.path(kind, "0" * 64).parent.parent.rglob("*.safetensors")
            )
            for kind in ("image_trajectory", "audio_latents")
        }

    before = files()
    assert [len(v) for v in before.values()] == [4, 4]
    assert trainer.precompute(batch_size=3) == 0  # second time: all cached
    for path in trainer.cache.path("audio_latents", "0" * 64).parent.parent.rglob("*.safetensors"):
        path.unlink()
    assert trainer.precompute(batch_size=3) == 4  # items whose audio latent alone was missing count too
    assert files() == before
    trainer.train()
    assert files() == before  # training found every trajectory and audio latent in the cache
    px = trainer.train_set[0]["pixel_values"]
    cached = trainer.trajectory(px)
    fresh = MeLFusionTrainer(
        _config(manifest, tmp_path / "fresh", "train.use_cache=false", "data.random_crop=false")
    ).trajectory(px)
    assert torch.allclose(cached.latents, fresh.latents, atol=1e-5)


def test_image_gain_is_zero_at_alpha_zero_and_not_otherwise(manifest, tmp_path):
    """validation_loss(use_image=False) - validation_loss() reads how much the model uses the image: exactly 0
    while α = 0 (the synapse is then the stock attention), non-zero once α is set."""
    trainer = MeLFusionTrainer(
        _config(manifest, tmp_path / "run", f"data.val_manifest={manifest}", "data.random_crop=false")
    )
    assert trainer.validation_loss(use_image=False) == trainer.validation_loss()
    trainer.pipe.synapse.set_alphas(0.15)
    assert trainer.validation_loss(use_image=False) != trainer.validation_loss()


def test_synapse_reinit_options_on_a_pretrained_folder(manifest, tmp_path):
    first = MeLFusionTrainer(_config(manifest, tmp_path / "a", "train.max_steps=1", "optim.lr_alpha=1e-2"))
    first.train()
    folder = first.export()
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    kept_alphas = MeLFusionPipeline.from_pretrained(folder).synapse.alphas().detach()
    # a new ρ alone keeps the α values (they fit the wider range)
    wider = MeLFusionTrainer(
        _config(
            manifest, tmp_path / "b", f"model.pretrained={folder}", "model.synapse_rho=2", "train.max_steps=1"
        )
    )
    assert wider.pipe.synapse.config.rho == 2.0
    assert torch.allclose(wider.pipe.synapse.alphas(), kept_alphas, atol=1e-6)
    # ρ and α together: every α restarts at the value, the new synapse is the one installed and trained
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "c",
            f"model.pretrained={folder}",
            "model.synapse_rho=2",
            "model.alpha_init=0.3",
            "train.max_steps=2",
            "optim.lr_alpha=1e-2",
            "train.image_dropout=0",
        )
    )
    synapse = trainer.pipe.synapse
    assert torch.allclose(synapse.alphas(), torch.full((synapse.num_layers,), 0.3))
    procs = [p for p in trainer.pipe.unet.attn_processors.values() if hasattr(p, "synapse")]
    assert procs and all(p.synapse is synapse for p in procs)
    trainer.train()
    assert not torch.allclose(synapse.alphas(), torch.full((synapse.num_layers,), 0.3))


def test_synapse_image_projection_option(manifest, tmp_path):
    """model.synapse_image_projection adds the identity-initialised K/V maps to a trained folder's synapse,
    keeps its α, trains the maps at θ's rate, and the exported folder keeps them."""
    first = MeLFusionTrainer(_config(manifest, tmp_path / "a", "train.max_steps=1", "optim.lr_alpha=1e-2"))
    first.train()
    folder = first.export()
    kept = first.pipe.synapse.alphas().detach()
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "b",
            f"model.pretrained={folder}",
            "model.synapse_image_projection=true",
            "model.alpha_init=0.1",
            "train.max_steps=2",
            "train.ema_decay=null",
            "optim.lr_unet=1e-3",
            "optim.lr_alpha=1e-6",
            "train.image_dropout=0",
        )
    )
    synapse = trainer.pipe.synapse
    assert synapse.config.image_projection and torch.allclose(synapse.alphas(), torch.full_like(kept, 0.1))
    eye = synapse.image_v_proj[0].weight.detach().clone()
    assert torch.equal(eye, torch.eye(eye.shape[0]))
    lrs = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lrs[id(synapse.image_v_proj[0].weight)] == 1e-3 and lrs[id(synapse.alpha_logits)] == 1e-6
    trainer.train()
    assert not torch.equal(synapse.image_v_proj[0].weight, eye)
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    loaded = MeLFusionPipeline.from_pretrained(trainer.export()).synapse
    assert torch.equal(loaded.image_v_proj[0].weight, synapse.image_v_proj[0].weight)
    # without the option a folder's synapse is left as it is
    plain = MeLFusionTrainer(
        _config(manifest, tmp_path / "c", f"model.pretrained={folder}", "train.max_steps=1")
    )
    assert plain.pipe.synapse.image_k_proj is None
    assert torch.allclose(plain.pipe.synapse.alphas(), kept)


def test_synapse_image_timestep_option(manifest, tmp_path):
    """model.synapse_image_timestep: the image K/V of every training row come from that one image timestep."""
    fixed = MeLFusionTrainer(
        _config(manifest, tmp_path / "a", "model.synapse_image_timestep=100", "train.max_steps=1")
    )
    assert fixed.pipe.synapse.config.image_timestep == 100
    px = next(iter(fixed.loader))["pixel_values"][:1]
    low, high = (fixed.image_features(px, torch.tensor([t])) for t in (5, 900))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(low, high))
    at100 = fixed.image_features(px, torch.tensor([100]))
    fixed.pipe.synapse.register_to_config(image_timestep=None)  # back to the paper's pairing
    paper_low, paper_high = (fixed.image_features(px, torch.tensor([t])) for t in (5, 900))
    assert not torch.equal(paper_low[0][0], paper_high[0][0])
    assert torch.equal(fixed.image_features(px, torch.tensor([100]))[0][0], at100[0][0])


def test_pretrained_folder_on_another_audio_vae(manifest, tmp_path):
    """model.pretrained + model.audio_vae: θ and the synapse are kept, the VAE, the vocoder's band count and the
    UNet's latent grid follow the new VAE; training and generation run on it and the export keeps it."""
    from melfusion.models.tiny import build_vae
    from melfusion.pipelines.melfusion import MeLFusionPipeline

    first = MeLFusionTrainer(_config(manifest, tmp_path / "a", "train.max_steps=1"))
    first.train()
    folder = first.export()
    old = MeLFusionPipeline.from_pretrained(folder)
    wide = tmp_path / "vae-128"
    build_vae(1, [8, 16, 16], 8, 1, 128).save_pretrained(wide)
    trainer = MeLFusionTrainer(
        _config(
            manifest,
            tmp_path / "b",
            f"model.pretrained={folder}",
            f"model.audio_vae={wide}",
            "train.max_steps=1",
        )
    )
    pipe = trainer.pipe
    assert pipe.vocoder.config.n_mels == 128 and trainer.mel_config.n_mels == 128
    assert tuple(pipe.unet.config.sample_size) == (old.unet.config.sample_size[0], 32)
    assert pipe.default_audio_length_in_s == pytest.approx(old.default_audio_length_in_s)
    assert torch.equal(pipe.unet.conv_in.weight, old.unet.conv_in.weight)
    assert torch.equal(pipe.synapse.alphas(), old.synapse.alphas())
    trainer.train()
    loaded = MeLFusionPipeline.from_pretrained(trainer.export())
    assert loaded.vae.config.sample_size == 128 and loaded.vocoder.config.n_mels == 128
    image = trainer.train_set.records[0].images[0]
    out = loaded(image, "a calm piano piece", num_inference_steps=2, progress=False)
    assert out.audios.shape[-1] == round(old.default_audio_length_in_s * loaded.sample_rate)
    narrow = tmp_path / "vae-4ch"
    build_vae(1, [8, 16, 16], 4, 1, 128).save_pretrained(narrow)
    with pytest.raises(MelfusionInputError, match="4 latent channels does not fit"):
        MeLFusionTrainer(
            _config(manifest, tmp_path / "c", f"model.pretrained={folder}", f"model.audio_vae={narrow}")
        )
    with pytest.raises(MelfusionInputError, match="no config.json"):
        MeLFusionTrainer(
            _config(manifest, tmp_path / "d", f"model.pretrained={folder}", f"model.audio_vae={tmp_path}")
        )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["model.alpha_init=0.6", "model.synapse_rho=2"], "outside"),
        (["model.synapse_rho=0"], "synapse_rho must be > 0"),
        (["model.alpha_init=0.3"], "alpha_init=0.3 does not fit"),  # default ρ = 5: |α| < 0.2
    ],
)
def test_synapse_reinit_bad_values_are_clear_errors(manifest, tmp_path, extra, message):
    with pytest.raises(MelfusionInputError, match=message):
        MeLFusionTrainer(_config(manifest, tmp_path / "run", *extra))


def test_embedded_synapse_experiment_config_parses():
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "embedded" / "synapse.yaml")
    config.validate()
    assert (config.model.synapse_rho, config.model.alpha_init, config.optim.lr_alpha) == (2.0, 0.25, 1e-5)
    assert config.model.pretrained.endswith("runs/embedded/music/final")
