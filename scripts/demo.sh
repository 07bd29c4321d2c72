#!/usr/bin/env bash
# The main job on the embedded default: set up, make the demo CT (the synthetic pelvic phantom of
# seed 0, never used in training), delineate the CTV with the bundled model, write the RTSTRUCT,
# the QA image and the report, and score the contour against the phantom's truth.
# Output goes to demo_output/ (replaced on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf demo_output
ctv=.venv/bin/ctv
$ctv phantom demo_output/demo_ct --seed 0 --matrix 512
$ctv predict demo_output/demo_ct/ct demo_output/prediction --formats rtstruct,seg,nifti
$ctv evaluate demo_output/prediction/ctv.nii.gz demo_output/demo_ct/masks/CTV.nii.gz demo_output/evaluation -q
echo
echo "RTSTRUCT for the planning system: demo_output/prediction/rtstruct.dcm"
echo "QA image:                         demo_output/prediction/qa.png"
echo "Report:                           demo_output/prediction/report.json"
echo "Agreement with the phantom truth: demo_output/evaluation/summary.csv"
