"""The review station in a real browser (headless Chromium): a phantom CT uploaded through the page, the CTV on
screen at its slices and not elsewhere, autoplay, a paint stroke with the Segment Editor saved as a new version,
and that version's RTSTRUCT, downloaded through the page's link, holding the edit on the uploaded CT's own UIDs
(plastimatch, dciodvfy)."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import require_tool
from review_support import TOKEN, Station, axial_view, chromium, magenta, zip_folder
from test_rtstruct import _plastimatch_masks, dice

from ctv_core import load_ct_series
from ctv_core.phantom import ScanSettings, make_phantom

pytestmark = pytest.mark.xdist_group("review-browser")


def _state(browser, name: str):
    return browser.execute_script("return window.trame.state.get(arguments[0])", name)


def _wait(condition, timeout_s: float = 240, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if isinstance(value, np.ndarray) or value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _frame_where(browser, predicate, what: str, timeout_s: float = 30) -> np.ndarray:
    """The axial view once ``predicate(rgb)`` holds (frames arrive asynchronously)."""
    def frame():
        rgb = axial_view(browser)[0]
        return rgb if predicate(rgb) else None

    return _wait(frame, timeout_s, what)


def _shows(browser, previous: np.ndarray | None = None) -> np.ndarray:
    """The axial view once it differs from ``previous``."""
    return _frame_where(browser, lambda rgb: previous is None or rgb.shape != previous.shape or
                        bool(np.abs(rgb - previous).sum()), "a new frame")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("review_browser")
    ct_dir = make_phantom(root / "patient", seed=41, settings=ScanSettings(matrix=256, slice_thickness_mm=5.0)).ct_dir
    archive = root / "ct.zip"
    archive.write_bytes(zip_folder(ct_dir))
    return ct_dir, archive


def test_upload_review_autoplay_edit_save_and_download_in_the_browser(phantom, tmp_path):
    ct_dir, archive = phantom
    ct = load_ct_series(ct_dir)
    station = Station(tmp_path / "data").start()
    browser = chromium()
    try:
        browser.get(f"{station.base}/?token={TOKEN}")
        _wait(lambda: browser.execute_script("return !!(window.trame && window.trame.state && window.ctvUpload)"),
              60, "the page")
        chooser = browser.find_element("id", "ctv-upload-input")
        browser.execute_script("arguments[0].style.display = 'block'", chooser)
        chooser.send_keys(str(archive))  # the page's own upload: XHR to the API with the page's cookie
        case_id = _wait(lambda: _state(browser, "ctv_open_id"), 120, "the uploaded case to open")
        assert _state(browser, "ctv_upload_message") == ""
        _wait(lambda: _state(browser, "ctv_shown_version") == 1, 300, "the prediction on screen")
        case = station.call("GET", f"/api/cases/{case_id}")[1]
        assert case["status"] == "done" and case["series_uid"] == ct.reference.series_instance_uid

        # The CTV is drawn on the axial view at its slices (stepped with the autoplay buttons), not elsewhere
        prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(_download(station, case_id, 1, "ctv.nii.gz",
                                                                         tmp_path))))
        holding = np.flatnonzero(prediction.any(axis=(1, 2)))
        frame = _shows(browser)
        counts = []
        for _ in range(3):
            browser.find_element("id", "ctv-next").click()
            frame = _shows(browser, frame)
            counts.append(magenta(frame))
            assert _state(browser, "ctv_position").startswith("CTV slice ")
            offset = _state(browser, "Red__SliderState__value")
            k = int(round((offset - ct.grid.origin[2]) / ct.grid.spacing[2]))
            assert k in holding, (k, holding)
        assert min(counts) > 200, counts
        empty = next(k for k in range(prediction.shape[0]) if k not in holding)
        browser.execute_script("window.trame.state.set('Red__SliderState__value', arguments[0])",
                               ct.grid.origin[2] + empty * ct.grid.spacing[2])
        frame = _frame_where(browser, lambda rgb: magenta(rgb) < 20, f"slice {empty} (no CTV) without magenta")

        # Autoplay: 250 ms a slice through the CTV's slices, then pause
        browser.find_element("id", "ctv-play").click()
        _wait(lambda: _state(browser, "ctv_playing"), 10, "autoplay to start")
        start = _state(browser, "ctv_position")

        def advanced() -> int:
            position = _state(browser, "ctv_position")
            if not (start.startswith("CTV slice") and position.startswith("CTV slice")):
                return 0
            return (int(position.split()[2]) - int(start.split()[2])) % len(holding)

        # Waits for the slices themselves (a fixed sleep assumed 250 ms a slice under any load).
        _wait(lambda: advanced() >= 4, 30, "autoplay to step through four CTV slices")
        browser.find_element("id", "ctv-play").click()
        _wait(lambda: _state(browser, "ctv_playing") is False, 10, "autoplay to pause")
        played = [int(p.split()[2]) for p in (start, _state(browser, "ctv_position")) if p.startswith("CTV slice")]
        assert len(played) == 2 and (played[1] - played[0]) % len(holding) >= 4, (start, played)
        frame = _shows(browser, frame)
        painted_at = int(round((_state(browser, "Red__SliderState__value") - ct.grid.origin[2]) / ct.grid.spacing[2]))

        # A paint stroke with the Segment Editor's Paint effect, saved as version 2 under the reviewer's name
        browser.find_element("id", "ctv-tab-edit").click()
        brush = next(i for i in browser.find_elements("css selector", "i.mdi-brush") if i.is_displayed())
        brush.find_element("xpath", "./ancestor::button").click()
        _wait(lambda: "Paint" in (_state(browser, "SegmentEditorState__active_effect_name") or ""), 20, "Paint")
        before = magenta(frame)
        _, view = axial_view(browser)
        assert not _state(browser, "SegmentEditorState__can_undo")
        _stroke(browser, view, -40, 40)
        _wait(lambda: _state(browser, "SegmentEditorState__can_undo"), 20, "the stroke in the segment")
        frame = _frame_where(browser, lambda rgb: magenta(rgb) > before + 100, "the stroke on screen")
        browser.find_element("id", "ctv-author").send_keys("Dr Review")
        _wait(lambda: _state(browser, "ctv_author") == "Dr Review", 10, "the name")
        browser.find_element("id", "ctv-save").click()
        _wait(lambda: _state(browser, "ctv_shown_version") == 2, 120, "the saved version")
        versions = station.call("GET", f"/api/cases/{case_id}")[1]["versions"]
        assert [(v["number"], v["kind"], v["author"]) for v in versions] == [(1, "prediction", ""),
                                                                               (2, "edit", "Dr Review")]

        # The page's download link of version 2's RTSTRUCT: the edit, on the uploaded CT's own UIDs
        browser.find_element("id", "ctv-tab-versions").click()
        links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#ctv-versions a")]
        wanted = f"{station.base}/api/cases/{case_id}/versions/2/rtstruct.dcm"
        assert wanted in links, links
        rtstruct = _download(station, case_id, 2, "rtstruct.dcm", tmp_path)

        # Another stroke, not saved: opening version 1 asks first, and the edit goes only when discarded
        browser.find_element("id", "ctv-tab-edit").click()
        _wait(lambda: "Paint" in _state(browser, "SegmentEditorState__active_effect_name"), 20,
              "the Paint effect still on after saving")
        _wait(lambda: not _state(browser, "SegmentEditorState__can_undo"), 20, "a fresh undo history")
        _stroke(browser, view, -40, -60)
        _wait(lambda: _state(browser, "SegmentEditorState__can_undo"), 20, "the second stroke in the segment")
        browser.find_element("id", "ctv-tab-versions").click()
        browser.find_element("css selector", "#ctv-version-1 button").click()
        _wait(lambda: _state(browser, "ctv_confirm_open"), 20, "the question about the unsaved edit")
        assert _state(browser, "ctv_shown_version") == 2
        next(b for b in browser.find_elements("css selector", "button") if b.text.upper() == "DISCARD THE EDIT").click()
        _wait(lambda: _state(browser, "ctv_shown_version") == 1, 30, "version 1 shown")
    finally:
        browser.quit()
        station.stop()
    _check_the_edit(rtstruct, ct, ct_dir, prediction, painted_at, tmp_path)


def _stroke(browser, view, x: int, y: int) -> None:
    """A paint stroke across the axial view, from ``(x, y)`` pixels off its centre, 80 pixels to the right."""
    from selenium.webdriver.common.action_chains import ActionChains

    stroke = ActionChains(browser).move_to_element_with_offset(view, x, y).click_and_hold()
    for _ in range(16):
        stroke = stroke.move_by_offset(5, 0).pause(0.05)
    stroke.release().perform()


def _check_the_edit(rtstruct, ct, ct_dir, prediction, painted_at, tmp_path):
    ds = pydicom.dcmread(rtstruct)
    series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ct.reference.series_instance_uid
    assert ds.FrameOfReferenceUID == ct.reference.frame_of_reference_uid
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == set(ct.reference.sop_instance_uids)
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["CTV"]
    assert ds.ApprovalStatus == "UNAPPROVED" and ds.StructureSetROISequence[0].ROIGenerationAlgorithm == ""
    theirs = _plastimatch_masks(require_tool("plastimatch"), rtstruct, ct_dir, tmp_path / "pm")["CTV"]
    edited = sitk.Resample(theirs, ct.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    edited = sitk.GetArrayFromImage(edited) != 0
    before = prediction != 0
    added = edited & ~before
    assert added.sum() > 50, added.sum()  # the stroke is in the RTSTRUCT
    assert added[painted_at].any(), (painted_at, np.flatnonzero(added.any(axis=(1, 2))))  # on the slice shown
    assert dice(edited & before, before) >= 0.95  # and the prediction is still there
    report = subprocess.run([require_tool("dciodvfy"), str(rtstruct)], capture_output=True, text=True)
    errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], errors


def _download(station: Station, case_id: str, version: int, name: str, tmp_path):
    status, data, _ = station.call("GET", f"/api/cases/{case_id}/versions/{version}/{name}")
    assert status == 200, (status, data)
    path = tmp_path / f"v{version}-{name}"
    path.write_bytes(data)
    return path
