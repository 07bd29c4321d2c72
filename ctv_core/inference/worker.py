"""The prediction process the Slicer module launches: one CT image file in, the CTV mask file out.

The Slicer module (``CTVDelineation/Logic``) runs this in a separate Python process so that
Slicer's user interface never waits for the network and a run can be stopped at any time::

    python -c "...; from ctv_core.inference.worker import main; sys.exit(main())" REQUEST.json

``REQUEST.json`` (written by the caller before the start) holds ``protocol`` (1), ``task``
("predict" or "probe"), and for a prediction ``image`` (a NRRD/NIfTI/MetaImage file of the CT in
HU on its own geometry, LPS, as SimpleITK writes it), ``mask`` and ``result`` (the files to
write), ``model`` (a package folder, or null for the bundled model), ``device`` ("auto", "cpu",
"cuda"), ``engine`` ("auto", "openvino", "torch"; absent: "auto") and the options ``passes``
(recurrent refinement passes, null for the model's own),
``test_time_flips`` (null for the model's own), ``postprocessing`` (false keeps every voxel
above the threshold) and ``uncertainty`` (absent, null or true: also write the voxel uncertainty map,
:mod:`.uncertainty`, as the file :func:`uncertainty_file` names: ``uncertainty`` with the mask's
ending, in the mask's folder, e.g. ``ctv.nrrd`` -> ``uncertainty.nrrd``; false: no map).

The conversation is the prediction-process protocol (:mod:`.process_protocol`): ``ready`` once the
model is loaded, then ``go`` from the caller once the image file is complete (the caller writes it
while this process imports its engine and loads the model), ``progress`` events, and one final event:
``done`` (``report``: the content of ``result.json``; ``files``: the mask, the result and, when asked
for, the ``uncertainty`` map), ``cancelled``
or ``error``. A probe answers ``probe`` and ends. ``cancel``, or a closed stdin (the caller quit),
stops the run.

The mask (uint8 0/1 on the input image's grid), the uncertainty map (uint8 percent 0-100 on the
same grid) and the result (``result.json``: CTV volume, warnings, device, seconds per stage, model
name/version/SHA-256, options used, and ``uncertainty``: the signal, the per-slice scores in mm,
the least certain slices, the seconds it took and ``map``, the map's file; null when not asked
for) are written under temporary names and renamed, the result last: a caller that sees ``done``
finds them all complete, and a stopped run leaves none. Exit status: the protocol's (0 done, 2 an error a user can
fix, 3 cancelled, 1 an unexpected failure, whose traceback goes to stderr for the log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from .._version import __version__
from ..atomic_files import atomic_file
from ..errors import CTVError, ModelPackageError, PredictionCancelled, describe_os_error
from .process_protocol import EXIT_CANCELLED, EXIT_DONE, EXIT_UNEXPECTED, EXIT_USER_ERROR, Commands, write_event

#: The version of the request file's fields.
PROTOCOL = 1
TASKS = ("predict", "probe")


class RequestError(CTVError):
    """The request file cannot be used (missing, not JSON, a wrong field)."""


def read_request(path: str | Path) -> dict[str, Any]:
    """The request as a dict, checked: known task, and for a prediction every field of the right kind."""
    path = Path(path)
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RequestError(f"The prediction request '{path}' cannot be read ({exc}).") from exc
    if not isinstance(request, dict) or request.get("protocol") != PROTOCOL or request.get("task") not in TASKS:
        raise RequestError(f"'{path}' is not a protocol-{PROTOCOL} request with a task among {', '.join(TASKS)}; "
                           "the Slicer module and ctv_core come from different versions: reinstall the extension.")
    if request["task"] == "predict":
        for key in ("image", "mask", "result"):
            if not isinstance(request.get(key), str) or not request[key]:
                raise RequestError(f"The prediction request lacks the file name '{key}'.")
        passes = request.get("passes")
        if passes is not None and (not isinstance(passes, int) or isinstance(passes, bool) or not 1 <= passes <= 8):
            raise RequestError(f"Refinement passes must be a whole number from 1 to 8, not {passes!r}.")
        for key in ("test_time_flips", "postprocessing", "uncertainty"):
            if request.get(key) is not None and not isinstance(request[key], bool):
                raise RequestError(f"'{key}' must be true, false or null, not {request[key]!r}.")
    return request


def wants_uncertainty(request: dict[str, Any]) -> bool:
    """Whether a (checked) prediction request asks for the uncertainty map: unless ``uncertainty`` is false."""
    return request.get("uncertainty") is not False


def uncertainty_file(request: dict[str, Any]) -> Path:
    """Where the uncertainty map of a prediction request goes: ``uncertainty`` + the mask's ending, beside the mask."""
    from ..structures.image_files import image_suffix

    mask = Path(request["mask"])
    return mask.with_name("uncertainty" + image_suffix(mask))


def with_options(package, passes: int | None, test_time_flips: bool | None, postprocessing: bool):
    """The model package with the user's options applied (the package on disk is not changed).

    ``passes`` replaces the network's recurrent refinement passes (the weights are shared by all
    passes, so any count runs; the model was trained with its own); ``test_time_flips`` replaces
    the inference setting; ``postprocessing=False`` keeps every voxel at or above the threshold
    (no component selection, no hole filling).
    """
    from ..model.settings import PostprocessingConfig

    network_config = package.network_config
    if passes is not None:
        if not hasattr(network_config, "passes"):
            raise ModelPackageError(f"The model '{package.model_id}' has no refinement passes to set; leave the "
                                    "option at the model's default.")
        network_config = dataclasses.replace(network_config, passes=passes)
    settings = package.settings
    if test_time_flips is not None:
        settings = dataclasses.replace(settings, inference=dataclasses.replace(settings.inference,
                                                                               test_time_flips=test_time_flips))
    if not postprocessing:
        settings = dataclasses.replace(settings, postprocessing=PostprocessingConfig(
            keep_largest=0, min_component_cc=0.0, fill_holes=False))
    return dataclasses.replace(package, network_config=network_config, settings=settings)


def _probe() -> dict[str, Any]:
    """What this Python offers: OpenVINO (the CPU engine), torch and its CUDA GPUs (None: not installed)."""
    from ..model.devices import cuda_usable, torch_installed

    from ..errors import MissingDependencyError
    from ..model.graph import import_openvino

    try:
        openvino_version = import_openvino().__version__.split("-")[0]
    except MissingDependencyError:
        openvino_version = None
    answer = {"event": "probe", "ctv_core": __version__, "openvino": openvino_version, "torch": None, "cuda": False,
              "gpus": [], "python": sys.version.split()[0]}
    if torch_installed():
        import torch

        cuda = cuda_usable()
        answer.update(torch=torch.__version__, cuda=cuda,
                      gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [])
    return answer


def _read_image(path: str):
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise RequestError(f"The CT image '{path}' handed to the prediction process cannot be read ({exc}).") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise RequestError(f"The CT image is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} "
                           "component(s); a CT is a 3D scalar volume in HU.")
    return image


def _predict(request: dict[str, Any], commands: Commands, emit) -> dict[str, Any]:
    from ..model.package import load_model_package
    from ..structures.image_files import write_image
    from .input_checks import check_pelvic_coverage
    from .predictor import CTVPredictor

    started = time.perf_counter()
    package = with_options(load_model_package(request.get("model")), request.get("passes"),
                           request.get("test_time_flips"), request.get("postprocessing", True) is not False)
    predictor = CTVPredictor(package, device=request.get("device") or "auto", engine=request.get("engine") or "auto")
    model = {"name": package.name, "version": package.version, "sha256": package.sha256,
             "path": str(package.path), "model_id": package.model_id}
    emit({"event": "ready", "device": str(predictor.device), "engine": predictor.engine.name, "model": model,
          "seconds": round(time.perf_counter() - started, 3)})
    commands.wait_for_go()

    image = _read_image(request["image"])
    check_pelvic_coverage(image)
    prediction = predictor.run(
        image,
        progress=lambda stage, fraction: emit({"event": "progress", "stage": stage, "fraction": round(fraction, 4)}),
        cancelled=commands.cancel.is_set,
        uncertainty=wants_uncertainty(request),
    )
    # Uncompressed: the files live for seconds.
    write_image(prediction.mask, request["mask"], compress=False)
    uncertainty = None
    if prediction.uncertainty is not None:
        map_file = uncertainty_file(request)
        write_image(prediction.uncertainty.map, map_file, compress=False)
        uncertainty = prediction.uncertainty.to_report() | {"map": str(map_file)}
    options = {"passes": getattr(package.network_config, "passes", None),
               "test_time_flips": package.settings.inference.test_time_flips,
               "postprocessing": request.get("postprocessing", True) is not False}
    result = {"protocol": PROTOCOL, "ctv_core_version": __version__, "mask": request["mask"],
              "volume_cc": round(prediction.volume_cc, 3), "warnings": list(prediction.warnings),
              "device": prediction.device, "engine": prediction.engine,
              "seconds": {k: round(v, 3) for k, v in prediction.seconds.items()},
              "model": model, "options": options, "uncertainty": uncertainty}
    with atomic_file(request["result"]) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Run the request named by ``argv[0]`` (default: ``sys.argv[1:]``); return the exit status."""
    args = sys.argv[1:] if argv is None else argv

    channel = stdout if stdout is not None else sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the protocol's: anything else printed goes to the log
        return _run(args, stdin if stdin is not None else sys.stdin, lambda event: write_event(event, channel))


def _run(args: list[str], stdin: IO[str], emit) -> int:
    try:
        if len(args) != 1:
            raise RequestError("The prediction process takes one argument, the request file (REQUEST.json).")
        request = read_request(args[0])
        if request["task"] == "probe":
            emit(_probe())
            return EXIT_DONE
        result = _predict(request, Commands(stdin, eof_cancels=True), emit)
        files = {"mask": request["mask"], "result": request["result"]}
        if result["uncertainty"] is not None:
            files["uncertainty"] = result["uncertainty"]["map"]
        emit({"event": "done", "report": result, "files": files})
        return EXIT_DONE
    except PredictionCancelled as exc:
        emit({"event": "cancelled", "message": str(exc)})
        return EXIT_CANCELLED
    except CTVError as exc:
        emit({"event": "error", "kind": type(exc).__name__, "message": str(exc)})
        return EXIT_USER_ERROR
    except ImportError as exc:
        emit({"event": "error", "kind": "MissingDependency",
              "message": f"The prediction process cannot import {exc.name or exc}: a Python package it needs is "
                         "missing. Install the dependencies (CTVDelineation module, 'Dependencies' section; "
                         "torch through the PyTorch extension), then try again."})
        return EXIT_USER_ERROR
    except OSError as exc:  # the disk, permissions or paths: the user's to fix
        emit({"event": "error", "kind": "OSError", "message": describe_os_error(exc, "predicting the CTV")})
        return EXIT_USER_ERROR
    except MemoryError:
        emit({"event": "error", "kind": "MemoryError",
              "message": "The prediction ran out of memory. Close other applications or large scenes, or use a "
                         "computer with more memory (a 512 x 512 x 200 CT needs about 3 GB), then try again."})
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - the caller shows the message; the traceback goes to the log
        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "kind": "internal",
              "message": f"The prediction process failed unexpectedly ({type(exc).__name__}: {exc}). This is a bug; "
                         "the details are in the log. Please report it with the log."})
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
