#!/usr/bin/env bash
# Installs the system packages ciel needs (PortAudio, JACK, Xvfb, EGL/Mesa, FFmpeg libs, Avahi's client for NDI,
# fonts for screenshots, and for `make models` the espeak-ng voices and the photographic wallpapers
# that the generated phone archive is made from). Runs apt-get when it is root on Debian/Ubuntu;
# otherwise it prints the exact command to run and exits non-zero only if something required is
# missing.
set -euo pipefail

PKGS=(libportaudio2 xvfb libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libsndfile1 libavahi-client3 fonts-dejavu-core
      espeak-ng mate-backgrounds lomiri-wallpapers-16.04 plasma-workspace-wallpapers)
NORECOMMENDS=(jackd2)
# the test stack (`make test`, CIEL_WITH_BROWSER=1): the pages in a browser, a static host, LAN
# namespaces, Pure Data for the example patches, glslang for the shaders
OPTIONAL=(chromium nginx-light iproute2 puredata-core glslang-tools)

missing=()
for p in "${PKGS[@]}" "${NORECOMMENDS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${CIEL_WITH_BROWSER:-0}" = "1" ]; then
    for p in "${OPTIONAL[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ciel: missing system packages: ${missing[*]}" >&2
    echo "ciel: install PortAudio, JACK, Xvfb, Pure Data and EGL/Mesa with your package manager" >&2
    echo "      (macOS: brew install portaudio jack pure-data)" >&2
    exit 0
fi

cmd_debconf='echo "jackd2 jackd/tweak_rt_limits boolean false" | debconf-set-selections'
cmd_install="DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "ciel: missing system packages: ${missing[*]}" >&2
    echo "ciel: run this once as root, then try again:" >&2
    echo "  sudo apt-get update && sudo sh -c '$cmd_debconf' && sudo sh -c '$cmd_install'" >&2
    exit 1
fi

echo "ciel: installing system packages: ${missing[*]}" >&2
apt-get update -qq
sh -c "$cmd_debconf"
sh -c "$cmd_install"
