#!/usr/bin/env bash
# The second run: ctv_core in an environment holding what Slicer 5.10 bundles (numpy, pydicom,
# SimpleITK at the versions Testing/slicer_api.json read from Slicer's SuperBuild) plus torch.
# 1. `pip install -e .` there must leave those three as they were (the install never replaces a
#    package Slicer ships); 2. the prediction, CT writing/loading and RTSTRUCT writing/reading tests
#    pass there (SEG needs highdicom, hence pydicom 3: those tests and the test-only JPEG 2000
#    encoding are left out); 3. `ctv predict` on a feet-first phantom writes the same RTSTRUCT as the
#    main environment (.venv, made by scripts/setup.sh): every contour point within 0.05 mm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=.venv-slicer510
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
log="$venv/setup.log"
: > "$log"
pins=$("$PYTHON" -c "import json; b = json.load(open('Testing/slicer_api.json'))['releases']['5.10']['bundled']
print(' '.join(f'{n}=={b[n]}' for n in ('numpy', 'pydicom', 'SimpleITK')))")
install() {
  if ! "$venv/bin/python" -m pip install --quiet "$@" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "test_slicer510: 'pip install $*' failed (log above)" >&2
    exit 1
  fi
}
install --upgrade pip
# shellcheck disable=SC2086 # one argument per pin
install "torch==2.13.0" $pins "pytest>=8"
install -e .
"$venv/bin/python" - "$pins" <<'EOF'
import sys
from importlib.metadata import version
changed = [f"{pin} became {version(pin.split('==')[0])}" for pin in sys.argv[1].split()
           if version(pin.split("==")[0]) != pin.split("==")[1]]
if changed:
    sys.exit("pip install -e . replaced a package Slicer 5.10 ships: " + "; ".join(changed))
print("Slicer 5.10's packages kept:", sys.argv[1])
EOF
"$venv/bin/python" -m pytest -p no:cacheprovider -q \
  Testing/test_rtstruct.py Testing/test_ct_loading.py Testing/test_prediction.py \
  --deselect Testing/test_rtstruct.py::test_rtstruct_written_by_rt_utils_agrees_except_on_ties \
  --deselect Testing/test_ct_loading.py::test_compressed_series_decode_to_the_same_hu \
  --deselect Testing/test_ct_loading.py::test_enhanced_multiframe_ct_is_refused_clearly \
  --deselect Testing/test_prediction.py::test_ctv_predict_end_to_end_matches_plastimatch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
.venv/bin/ctv phantom -q --seed 11 --matrix 256 --slices 40 --slice-thickness 5 --position FFS "$work/phantom" >/dev/null
.venv/bin/ctv predict -q --device cpu "$work/phantom/ct" "$work/main" >/dev/null
"$venv/bin/ctv" predict -q --device cpu "$work/phantom/ct" "$work/pinned" >/dev/null
"$venv/bin/python" - "$work/main/rtstruct.dcm" "$work/pinned/rtstruct.dcm" <<'EOF'
import sys
import numpy as np
import pydicom
def contours(path):
    return [np.asarray(c.ContourData, float).reshape(-1, 3)
            for roi in pydicom.dcmread(path).ROIContourSequence for c in roi.ContourSequence]
main, pinned = contours(sys.argv[1]), contours(sys.argv[2])
if [len(c) for c in main] != [len(c) for c in pinned]:
    sys.exit(f"the RTSTRUCTs differ: {len(main)} and {len(pinned)} contours")
worst = max(float(np.abs(a - b).max()) for a, b in zip(main, pinned))
if worst > 0.05:
    sys.exit(f"contour points differ by up to {worst:.4f} mm (limit 0.05)")
print(f"ctv predict, feet-first: {len(main)} contours, {sum(map(len, main))} points, "
      f"max difference {worst:.6f} mm (pydicom {pydicom.__version__}, numpy {np.__version__})")
EOF
