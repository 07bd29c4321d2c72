#!/usr/bin/env bash
# Reproduce the bundled demo model: synthetic phantoms -> HDF5 -> training -> model package.
# Usage: bash scripts/train_demo_model.sh WORK_DIR [PKG_DIR]   (PKG_DIR default: ctv_core/model/demo)
# Seeds 100-131 are the training phantoms; the tests evaluate on seeds from 9000 on, never trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: train_demo_model.sh WORK_DIR [PKG_DIR]}
pkg=${2:-ctv_core/model/demo}
ctv=.venv/bin/ctv
mkdir -p "$work/archive"
position_of() {  # mostly supine head-first, as pelvic planning CTs are; some of each other position
  case $(( $1 % 10 )) in 7) echo FFS ;; 8) echo HFP ;; 9) echo FFP ;; *) echo HFS ;; esac
}
for seed in $(seq 100 131); do
  [ -d "$work/archive/p$seed" ] || echo "$seed $(position_of "$seed")"
done | xargs -P 2 -n 2 sh -c "$ctv phantom $work/archive/p\$0 --seed \$0 --matrix 256 --position \$1 -q > /dev/null"
[ -f "$work/data.h5" ] || $ctv dataset build "$work/archive" "$work/data.h5" -q
$ctv train "$work/data.h5" "$work/run" --config configs/demo_model.json --device cpu -q
rm -rf "$pkg"
$ctv export "$work/run" "$pkg" --name ctv-demo-phantom --version 0.2.0 \
  --description "Demo model trained on 32 synthetic pelvic phantoms (ctv phantom, seeds 100-131) on a 2-core CPU. Not for clinical use: train your own model on your clinic's data (docs/training.md)."
