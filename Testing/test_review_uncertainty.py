"""The prediction's uncertainty in the review station: the map among a version's files (downloaded through the
API, kept with an edit), the overlay switched on and off in a real browser, the autoplay visiting the least
certain slices first when asked, hostile switch and list values refused, and a foreign page unable to reach the switches
(the station's websocket refuses it)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import SimpleITK as sitk
from review_support import TOKEN, Station, axial_view, chromium, zip_folder
from test_review_attacks import EVIL, _raw, _upgrade
from test_review_browser import _download, _state, _wait

from ctv_core import load_ct_series
from ctv_core.phantom import ScanSettings, make_phantom

pytestmark = pytest.mark.xdist_group("review-browser")


def _same(value, expected) -> bool:
    """``value`` (read back from the page) is ``expected``: equal and, for a switch, a bool (0 is not off)."""
    return value == expected and isinstance(value, bool) == isinstance(expected, bool)


def test_the_map_is_a_version_file_listed_before_the_qa_image():
    from ctv_core.service.review.desk import VERSION_FILES

    assert VERSION_FILES == ("rtstruct.dcm", "seg.dcm", "ctv.nii.gz", "uncertainty.nii.gz", "qa.png", "report.json")


def test_least_certain_slices_come_first_then_the_ctvs_others(ctv_scene, mrml_scene, tmp_path):
    import vtk

    from conftest import axial_grid
    from ctv_core.scene.uncertainty import leastCertainFirst, sliceOffset

    grid = axial_grid(position="FFS", oblique_deg=12.0)
    axial = vtk.vtkMatrix4x4()  # an axial view: normal along superior
    ctv = sorted(round(sliceOffset(grid, k, axial), 4) for k in range(3, 9))
    order = leastCertainFirst(ctv, grid, [5, 10, 5, 3], axial)
    assert order[:3] == [round(sliceOffset(grid, k, axial), 4) for k in (5, 10, 3)]  # slice 10: no CTV, still first
    assert order[3:] == [o for o in ctv if o not in order[:3]] and len(order) == 7
    assert leastCertainFirst(ctv, grid, [], axial) == ctv


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_uncertainty")
    ct_dir = make_phantom(root / "patient", seed=43, settings=ScanSettings(matrix=256, slice_thickness_mm=5.0)).ct_dir
    return ct_dir, zip_folder(ct_dir)


def _frame(browser, previous=None, timeout_s: float = 30):
    """The axial view once it differs from ``previous`` (frames arrive asynchronously)."""
    return _wait(lambda: (rgb := axial_view(browser)[0]) is not None and (
        previous is None or rgb.shape != previous.shape or bool(np.abs(rgb - previous).sum())) and rgb, timeout_s,
        "a new frame")


def _settled(browser, timeout_s: float = 30):
    """The axial view once two frames a second apart are the same (the other views have rendered again after a
    step, the last frame of the step has arrived)."""
    def same():
        first = axial_view(browser)[0]
        time.sleep(1.0)
        second = axial_view(browser)[0]
        return second if first.shape == second.shape and (np.abs(first - second).sum(axis=-1) > 30).sum() < 5 \
            else None

    return _wait(same, timeout_s, "a settled view")


def _k(browser, ct) -> int:
    return int(round((_state(browser, "Red__SliderState__value") - ct.grid.origin[2]) / ct.grid.spacing[2]))


def test_the_overlay_switch_and_the_least_certain_autoplay_in_the_browser(phantom, tmp_path):
    ct_dir, archive = phantom
    ct = load_ct_series(ct_dir)
    station = Station(tmp_path / "data").start()
    browser = chromium()
    try:
        status, answer = station.upload(archive)
        assert status in (200, 201, 202), answer
        case_id = answer["id"]
        case = station.wait_case(case_id)
        assert case["status"] == "done", case
        files = case["versions"][0]["files"]
        assert files == ["rtstruct.dcm", "seg.dcm", "ctv.nii.gz", "uncertainty.nii.gz", "qa.png", "report.json"]
        shown_map = sitk.ReadImage(str(_download(station, case_id, 1, "uncertainty.nii.gz", tmp_path)))
        values = sitk.GetArrayFromImage(shown_map)
        assert shown_map.GetSize() == ct.image.GetSize() and values.dtype == np.uint8 and 50 < values.max() <= 100
        report = station.call("GET", f"/api/cases/{case_id}/versions/1/report.json")[1]
        least = report["uncertainty"]["least_certain_slices"]
        assert len(least) >= 2

        browser.get(f"{station.base}/?token={TOKEN}")
        _wait(lambda: browser.execute_script("return !!(window.trame && window.trame.state && window.ctvUpload)"),
              60, "the page")
        browser.execute_script("window.trame.trigger('ctv_open_case', [arguments[0]])", case_id)
        _wait(lambda: _state(browser, "ctv_shown_version") == 1, 120, "the prediction on screen")
        assert _state(browser, "ctv_uncertainty_available") is True and _state(browser, "ctv_uncertainty") is True

        # autoplay: off by default (the CTV's slices in order); switched on, the least certain slices come first
        assert _state(browser, "ctv_least_certain_first") is False
        browser.execute_script("window.trame.state.set('ctv_least_certain_first', true)")
        _wait(lambda: _state(browser, "ctv_position") == "Next: the least certain slices first", 10,
              "the station to take the switch")
        visited = []
        for _ in range(2):
            before = _state(browser, "Red__SliderState__value")
            browser.find_element("id", "ctv-next").click()
            _wait(lambda: _state(browser, "Red__SliderState__value") != before, 20, "a step")
            visited.append(_k(browser, ct))
        assert visited == least[:2], (visited, least)

        # the overlay at the least certain slice: switched off, the frame changes where the map is drawn; back on,
        # it is drawn again
        with_map = _settled(browser)
        browser.find_element("css selector", "#ctv-uncertainty input, input#ctv-uncertainty").click()
        _wait(lambda: _state(browser, "ctv_uncertainty") is False, 10, "the overlay switched off")
        _frame(browser, with_map)
        without_map = _settled(browser)
        changed = np.abs(with_map - without_map).sum(axis=-1) > 30
        assert changed.sum() > 200, changed.sum()
        warm = (with_map[..., 0] - with_map[..., 2] > 40)[changed]  # Iron: red over blue where the map shows
        assert warm.mean() > 0.5, warm.mean()
        browser.execute_script("window.trame.state.set('ctv_uncertainty', true)")
        def warm_where_the_map_was(rgb) -> int:
            return int(((rgb[..., 0] - rgb[..., 2] > 40) & changed).sum()) if rgb.shape[:2] == changed.shape else 0

        assert warm_where_the_map_was(without_map) < warm_where_the_map_was(with_map) / 4
        _wait(lambda: warm_where_the_map_was(axial_view(browser)[0]) > warm_where_the_map_was(with_map) / 2, 30,
              "the map drawn again where it was")

        # values a page never sends are refused and the switch set back
        for name, hostile, kept in (("ctv_uncertainty", "yes", True), ("ctv_least_certain_first", {"a": 1}, True),
                                    ("ctv_uncertainty", 0, True), ("ctv_window", "__proto__", "soft tissue"),
                                    ("ctv_window", ["bone"], "soft tissue"), ("ctv_speed", "2", 1.0),
                                    ("ctv_speed", 1e308, 1.0)):
            browser.execute_script("window.trame.state.set(arguments[0], arguments[1])", name, hostile)
            _wait(lambda: "Refused" in (_state(browser, "ctv_status") or ""), 10, f"{name}={hostile!r} refused")
            _wait(lambda: _same(_state(browser, name), kept), 10, f"{name} set back")
            browser.execute_script("window.trame.state.set('ctv_status', '')")

        # a foreign page cannot even open the websocket the switches travel on
        status, _, _ = _raw(station, "GET", "/ws", {"Authorization": f"Bearer {TOKEN}", **_upgrade(EVIL)})
        assert status == 403
    finally:
        browser.quit()
        station.stop()


def test_a_saved_edit_keeps_the_map_and_figures_of_the_prediction_it_started_from(tmp_path):
    from ctv_core.service.review.config import StationConfig
    from ctv_core.service.review.desk import ReviewDesk
    from ctv_core.service.review.versions import _keep_uncertainty

    desk = ReviewDesk(StationConfig(data=tmp_path / "data"), {"demo": None})
    case_id = desk.store.new_case("upload")
    figures = {"signal": "margin", "slice_scores": [0.0, 2.5], "slice_score_unit": "mm",
               "least_certain_slices": [1], "seconds": 0.1}
    versions = []
    for uncertainty in (figures, None):
        desk.store.queue_job(case_id, queue="station")
        job = desk.store.claim_job("station")
        folder = desk.store.version_dir(case_id, job.version)
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"uncertainty": uncertainty}))
        if uncertainty is not None:
            (folder / "uncertainty.nii.gz").write_bytes(b"the map's bytes")
        desk.store.finish_job(job, model="demo 1")
        versions.append(job.version)
    staging = tmp_path / "staging"
    staging.mkdir()
    kept = _keep_uncertainty(desk, case_id, versions[0], staging)
    assert kept == {"uncertainty": {**figures, "of_version": versions[0]}}
    assert (staging / "uncertainty.nii.gz").read_bytes() == b"the map's bytes"
    (staging / "uncertainty.nii.gz").unlink()
    assert _keep_uncertainty(desk, case_id, versions[1], staging) == {} and not list(staging.iterdir())
