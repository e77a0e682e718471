#!/usr/bin/env bash
# Reproduces the embedded default model (src/melfusion/assets/default) from scratch, offline:
#   synthetic corpus -> audio VAE, image VAE -> image LDM -> music LDM + synapse -> synapse fine-tuning
#   -> one-tonic corpus -> 128-band audio VAE -> fine-tuning onto it
#   -> mood-balanced fine-tuning (twice) -> packed float16 folder.
# Every stage checkpoints and resumes: rerun the same command after an interruption. A finished stage
# (its final/ folder exists) is skipped. About 6.1 hours on a 2-core CPU (see README, "Embedded model").
#   bash scripts/train_embedded.sh                 # everything, into runs/
#   RUNS=/tmp/r N_ITEMS=64 QUICK=1 bash scripts/train_embedded.sh   # a few steps of each stage (smoke test)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
bash scripts/install_system_deps.sh fluidsynth || true
PY=.venv/bin/python
RUNS=${RUNS:-runs}
N_ITEMS=${N_ITEMS:-6000}
DEST=${DEST:-src/melfusion/assets/default}
CORPUS=$RUNS/corpus
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

quick=()
if [ "${QUICK:-0}" = 1 ]; then
  quick=(train.max_steps=2 train.checkpoint_every=1 train.validate_every=0)
fi

stage() {  # stage NAME CONFIG [overrides...]; trains on the corpus in $CORPUS
  local name=$1 config=$2
  shift 2
  local out=$RUNS/embedded/$name
  if [ -f "$out/final/config.json" ] || [ -f "$out/final/model_index.json" ]; then
    echo "== $name: done ($out/final)"
    return
  fi
  local resume=()
  if compgen -G "$out/checkpoints/step-*" >/dev/null; then resume=(--resume latest); fi
  echo "== $name -> $out ${resume[*]}"
  .venv/bin/melfusion train --config "$config" train.output_dir="$out" \
    data.train_manifest="$CORPUS/train.jsonl" data.val_manifest="$CORPUS/val.jsonl" "$@" "${quick[@]}" "${resume[@]}"
}

.venv/bin/melfusion data synth --n "$N_ITEMS" --out "$CORPUS" --seed 0 --image-size 32 --workers "$(nproc)"
# stage 1: the frozen parts (the two VAEs side by side when there are cores for both)
stage audio-vae configs/embedded/audio-vae.yaml
stage image-vae configs/embedded/image-vae.yaml
stage image-ldm configs/embedded/image-ldm.yaml model.image_vae="$RUNS/embedded/image-vae/final"
# stage 2: the music LDM and α on the frozen parts
stage music configs/embedded/music.yaml \
  model.audio_vae="$RUNS/embedded/audio-vae/final" model.image_vae="$RUNS/embedded/image-vae/final" \
  model.image_unet="$RUNS/embedded/image-ldm/final"
# stage 3: MeLFusion fine-tuning of θ and α from the music LDM (synapse at ρ = 2, α restarted at 0.25)
stage synapse configs/embedded/synapse.yaml model.pretrained="$RUNS/embedded/music/final"
# stage 4: every music step reads the image features of image timestep 200 (not in the paper; see
# melfusion.models.synapse), then the same plus a learned identity-initialised projection of K^I, V^I
stage synapse-fixed-t configs/embedded/synapse.yaml model.pretrained="$RUNS/embedded/synapse/final" \
  model.synapse_image_timestep=200 train.max_steps=700 train.validate_every=700
stage synapse-projection configs/embedded/synapse.yaml model.pretrained="$RUNS/embedded/synapse-fixed-t/final" \
  model.synapse_image_timestep=200 model.synapse_image_projection=true train.max_steps=2000 train.validate_every=1000
# stage 5: the mode. The same items with every key on C (--tonics C), so that the mode is a fixed pitch set
# (E, A, B against E♭, A♭, B♭) instead of a relation to a random tonic, which the stages above never learn;
# a 128-band audio VAE on it (64 bands cap the mode probe at 62.5 %); the stage-4 model fine-tuned onto it
.venv/bin/melfusion data synth --n "$N_ITEMS" --out "$RUNS/corpus-c" --seed 0 --image-size 32 \
  --workers "$(nproc)" --tonics C
CORPUS=$RUNS/corpus-c
stage audio-vae-128 configs/embedded/audio-vae-128.yaml
stage music-128 configs/embedded/synapse.yaml model.pretrained="$RUNS/embedded/synapse-projection/final" \
  model.audio_vae="$RUNS/embedded/audio-vae-128/final" model.synapse_image_timestep=200 \
  model.synapse_image_projection=true train.max_steps=2000 train.validate_every=1000
# stage 6: balanced epochs. The split holds out one (mode, tempo class) cell of some (genre, instrument), so in
# training the prompt predicts the mood the test cell lacks; per (genre, instrument) every mode and tempo
# class now gets equal mass, so the text carries no mood and only the image can tell it (the features
# cached by music-128 are reused). BALANCE_WITHIN=[] balances over the whole corpus (tiny corpora).
balanced=(model.alpha_init=null model.synapse_image_timestep=200 model.synapse_image_projection=true
  "data.balance_within=${BALANCE_WITHIN:-[genre,instrument]}" "data.balance_over=[mode,tempo_class]"
  train.cache_dir="$RUNS/embedded/music-128/cache" train.max_steps=2000 train.validate_every=1000)
stage music-128-balanced configs/embedded/synapse.yaml model.pretrained="$RUNS/embedded/music-128/final" \
  "${balanced[@]}"
# ... and 2000 more from there (fresh warm-up and EMA): after the first 2000 a prompt alone still gave the
# mood its pair had before balancing (text-only mode 33 %); after these 48 % (README, "Embedded model")
stage music-128-balanced-2 configs/embedded/synapse.yaml \
  model.pretrained="$RUNS/embedded/music-128-balanced/final" "${balanced[@]}"
# packed with the image guidance scale the adherence benchmark picked (three CFG branches, scale 14)
$PY -m melfusion.models.embedded "$RUNS/embedded/music-128-balanced-2/final" "$DEST" \
  --version "trained-$(date -u +%Y%m%d)" --image-guidance 14
