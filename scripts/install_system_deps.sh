#!/usr/bin/env bash
# System packages for `melfusion data synth --renderer fluidsynth`: the fluidsynth program and a
# General-MIDI soundfont (Debian/Ubuntu: fluid-soundfont-gm, else the small timgm6mb-soundfont).
# Idempotent. A no-op when both are already present, when not root (prints the command to run), or
# when apt-get is missing. Never fails the caller: without them the corpus uses the numpy synthesiser.
set -uo pipefail

have_soundfont() {
  local f
  if [ -n "${MELFUSION_SOUNDFONT:-}" ] && [ -f "${MELFUSION_SOUNDFONT}" ]; then return 0; fi
  for f in /usr/share/sounds/sf2/FluidR3_GM.sf2 /usr/share/sounds/sf2/TimGM6mb.sf2 \
    /usr/share/sounds/sf2/default-GM.sf2 /usr/share/soundfonts/FluidR3_GM.sf2 \
    /usr/share/soundfonts/default.sf2 /usr/share/sounds/sf3/default-GM.sf3; do
    [ -f "$f" ] && return 0
  done
  return 1
}

if command -v fluidsynth >/dev/null 2>&1 && have_soundfont; then
  echo "install_system_deps: fluidsynth and a GM soundfont are present"
  exit 0
fi
packages="fluidsynth fluid-soundfont-gm"
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps: not root; to render the synthetic corpus with FluidSynth run:"
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $packages"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: no apt-get; install fluidsynth and a General-MIDI .sf2 soundfont yourself" \
    "(or set MELFUSION_SOUNDFONT); the numpy synthesiser is used meanwhile"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  echo "install_system_deps: apt-get update failed; the numpy synthesiser will be used" >&2
  exit 0
fi
if ! apt-get install -y -qq --no-install-recommends $packages; then
  echo "install_system_deps: $packages unavailable; trying fluidsynth timgm6mb-soundfont" >&2
  apt-get install -y -qq --no-install-recommends fluidsynth timgm6mb-soundfont ||
    echo "install_system_deps: could not install fluidsynth; the numpy synthesiser will be used" >&2
fi
if command -v fluidsynth >/dev/null 2>&1 && have_soundfont; then
  echo "install_system_deps: fluidsynth and a GM soundfont installed"
fi
exit 0
