#!/usr/bin/env bash
# Set up and run the whole test suite. Installs the Debian tools the tests use when they are
# missing: the validators dciodvfy (dicom3tools), plastimatch and dcmtk, Orthanc (a real PACS,
# started on loopback by the DICOM node tests), Chromium with its WebDriver (the review station's
# browser test) and the Mesa EGL libraries for off-screen rendering; and the slicer-core wheel
# (the "slicer" extra) for the Slicer module's tests, trame-slicer (the "review" extra) for the
# review station's.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
command -v plastimatch >/dev/null || missing+=(plastimatch)
command -v dcmdump >/dev/null || missing+=(dcmtk)
command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ] || missing+=(orthanc)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# Off-screen rendering of Slicer's views (slicer-core's VTK through EGL on Mesa, no X server).
libraries=$(ldconfig -p)
grep -q "libEGL_mesa.so" <<<"$libraries" || missing+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
grep -q "libGL.so.1" <<<"$libraries" || missing+=(libgl1)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
SETUP_EXTRAS=test,slicer,review bash scripts/setup.sh
# ctv_core once more in an environment pinned to Slicer 5.10's bundled numpy, pydicom and SimpleITK.
bash scripts/test_slicer510.sh
# loadgroup: the tests of one running review station (xdist_group) stay on one worker.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
