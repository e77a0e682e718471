#!/usr/bin/env bash
# Optional system packages some tests exercise:
# - `melfusion data synth --renderer fluidsynth`: the fluidsynth program and a General-MIDI soundfont
#   (Debian/Ubuntu: fluid-soundfont-gm, else the small timgm6mb-soundfont); without them the corpus uses
#   the numpy synthesiser.
# - tests/test_app.py: Debian's chromium (/usr/bin/chromium), driven by playwright; without it that test skips.
# Arguments pick them (`fluidsynth`, `chromium`; default: both). Idempotent. A no-op when they are present, when not root (prints the command to run), or when apt-get is
# missing. Never fails the caller.
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
have_fluidsynth() { command -v fluidsynth >/dev/null 2>&1 && have_soundfont; }
have_chromium() { [ -x /usr/bin/chromium ]; }

want=" ${*:-fluidsynth chromium} "
wants() { [[ "$want" == *" $1 "* ]]; }
packages=""
if wants fluidsynth && ! have_fluidsynth; then packages="fluidsynth fluid-soundfont-gm"; fi
if wants chromium && ! have_chromium; then packages="$packages chromium"; fi
packages="${packages# }"
if [ -z "$packages" ]; then
  echo "install_system_deps: present:$want"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps: not root; for the FluidSynth corpus and the browser test run:"
  echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $packages"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_system_deps: no apt-get; install $packages yourself (a General-MIDI .sf2 soundfont or" \
    "MELFUSION_SOUNDFONT for fluidsynth); meanwhile the numpy synthesiser is used and the browser test skips"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  echo "install_system_deps: apt-get update failed; numpy synthesiser used, browser test skipped" >&2
  exit 0
fi
if [[ "$packages" == *fluidsynth* ]]; then
  if ! apt-get install -y -qq --no-install-recommends fluidsynth fluid-soundfont-gm; then
    echo "install_system_deps: fluid-soundfont-gm unavailable; trying fluidsynth timgm6mb-soundfont" >&2
    apt-get install -y -qq --no-install-recommends fluidsynth timgm6mb-soundfont ||
      echo "install_system_deps: could not install fluidsynth; the numpy synthesiser will be used" >&2
  fi
  have_fluidsynth && echo "install_system_deps: fluidsynth and a GM soundfont installed"
fi
if [[ "$packages" == *chromium* ]]; then
  if apt-get install -y -qq --no-install-recommends chromium && have_chromium; then
    echo "install_system_deps: chromium installed"
  else
    echo "install_system_deps: could not install chromium; tests/test_app.py's browser test will skip" >&2
  fi
fi
exit 0
