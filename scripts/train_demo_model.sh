#!/usr/bin/env bash
# Reproduce the bundled demo model: synthetic phantoms (with their tissue label maps) -> HDF5 ->
# training with appearance randomisation -> model package.
# Usage: bash scripts/train_demo_model.sh WORK_DIR [PKG_DIR]   (PKG_DIR default: ctv_core/model/demo)
# Seeds 100-195 are the training phantoms; the tests and benchmarks evaluate on seeds from 9000 on,
# never trained on. Training resumes from WORK_DIR/run/checkpoints/last.pt when run again.
# On a shared machine run it as `nice -n 5 bash scripts/train_demo_model.sh WORK_DIR`.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: train_demo_model.sh WORK_DIR [PKG_DIR]}
pkg=${2:-ctv_core/model/demo}
ctv=.venv/bin/ctv
mkdir -p "$work/archive"
position_of() {  # mostly supine head-first, as pelvic planning CTs are; some of each other position
  case $(( $1 % 10 )) in 7) echo FFS ;; 8) echo HFP ;; 9) echo FFP ;; *) echo HFS ;; esac
}
for seed in $(seq 100 195); do
  [ -d "$work/archive/p$seed" ] || echo "$seed $(position_of "$seed")"
done | xargs -r -P 2 -n 2 sh -c "$ctv phantom $work/archive/p\$0 --seed \$0 --matrix 256 --position \$1 -q > /dev/null"
[ -f "$work/data.h5" ] || $ctv dataset build "$work/archive" "$work/data.h5" --tissue-labels -q
# The method's full widths from scratch, half the patches synthesised (configs/demo_model.json;
# docs/training.md, experiments/robust_model/README.md).
$ctv train "$work/data.h5" "$work/run" --config configs/demo_model.json --device cpu -q
rm -rf "$pkg"
$ctv export "$work/run" "$pkg" --name ctv-demo-phantom --version 0.3.0 --weights-dtype float16 \
  --description "Demo model: the method's network (widths 16/32/64/96/128, two passes) trained on 96 synthetic pelvic phantoms (ctv phantom 2, seeds 100-195) on a 2-core CPU, half of the patches with images synthesised from the phantoms' tissue label maps with random CT numbers, blur, noise, streaks and fields of view, and random CT-number offsets. Not for clinical use: train your own model on your clinic's data (docs/training.md)."
