#!/usr/bin/env bash
# The RAVE environment for `make test`: acids-rave, which makes the RAVE exports the tests play.
#
# acids-rave pins scipy 1.10 and pytorch-lightning 1.9, needs torchaudio, and imports
# scipy.signal.kaiser (gone from SciPy 1.13): none of that fits ciel's environment (NumPy 2,
# torch 2.13). So it gets its own venv that borrows ciel's torch (a .pth line to ciel's
# site-packages, after its own): the RAVE code is unchanged, only what it imports around torch
# is older. torchaudio has no build for this torch; RAVE needs only its pure-Python
# Spectrogram, so the compiled extension is left out (torchaudio then imports without it, as
# documented for deployments without the shared library).
#
#   bash scripts/setup-rave.sh CIEL_VENV RAVE_VENV
set -euo pipefail
ciel_venv=$(cd "$1" && pwd)
rave_venv=$2
site=$("$ciel_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$ciel_venv/bin/python" -m venv --clear "$rave_venv"
rave_site=$("$rave_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$site" > "$rave_site/ciel-torch.pth"
pip=("$rave_venv/bin/python" -m pip install -q --no-warn-conflicts -c "$(dirname "$0")/../constraints.txt")
"${pip[@]}" --no-deps acids-rave==2.3.1 torchaudio==2.11.1
"${pip[@]}" "numpy<2" scipy==1.10.0 pytorch-lightning==1.9.0 "setuptools<81" absl-py einops gin-config \
    GPUtil librosa pyyaml scikit-learn tqdm udls cached-conv nn-tilde lmdb
rm -f "$rave_site"/torchaudio/lib/*.so
if ! err=$("$rave_venv/bin/python" -W ignore -c 'import rave, cached_conv, nn_tilde' 2>&1); then
    echo "ciel: the RAVE environment in $rave_venv does not import: $err" >&2
    exit 1
fi
echo "ciel: RAVE environment ready in $rave_venv" >&2
