#!/usr/bin/env bash
# Set up the project's Python environment in .venv (idempotent).
# torch is installed first and pinned: on this kind of machine `torch==2.13.0` is a CPU build
# from local disk, while an unpinned torch would pull a multi-GB CUDA build. GPU users can
# install any CUDA build of torch >= 2.1 before running this script. ctv_core itself predicts on the
# CPU without torch (OpenVINO); torch is for training, export, CUDA and the evaluation's surface
# metrics (the extra ctv_core[torch], included in the default extras "test").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
log=.venv/setup.log
: > "$log"
pip_install() {
  if ! .venv/bin/python -m pip install --quiet "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: 'pip install $*' failed (log above, also in $log)" >&2
    exit 1
  fi
}
pip_install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip_install "torch==2.13.0"
fi
# Extras to install (SETUP_EXTRAS, default "test"; scripts/test.sh adds "slicer" and "review").
pip_install -e ".[${SETUP_EXTRAS:-test}]"
.venv/bin/python -c "import openvino, torch, ctv_core; print(f'ctv_core {ctv_core.__version__} ready (OpenVINO {openvino.__version__.split(\"-\")[0]}, torch {torch.__version__})')"
