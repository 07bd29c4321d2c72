"""The module's in-application self-test (Reload & Test in Slicer, or the Self Tests module): a phantom CT
through Slicer's DICOM module, the prediction process, the segment and the RTSTRUCT."""

from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class CTVDelineationTest(ScriptedLoadableModuleTest):
    """In-application self-test: a phantom CT through the DICOM module, Apply, the segment, the RTSTRUCT."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_PhantomToSegmentAndRTStruct()

    def test_PhantomToSegmentAndRTStruct(self):
        import shutil

        import numpy as np
        import SimpleITK as sitk
        from DICOMLib import DICOMUtils

        from CTVDelineation import loadLogicPackage

        lib = loadLogicPackage()
        from ctv_core import load_ct_series, read_rtstruct
        from ctv_core.phantom import ScanSettings, make_phantom

        self.delayDisplay("Making a phantom CT (seed 9001, never trained on) and loading it through the DICOM module")
        folder = Path(slicer.app.temporaryPath) / "CTVDelineationSelfTest"
        shutil.rmtree(folder, ignore_errors=True)
        phantom = make_phantom(folder / "phantom", seed=9001, settings=ScanSettings(matrix=256, slices=48,
                                                                                    slice_thickness_mm=5.0))
        ct = load_ct_series(phantom.ct_dir)
        with DICOMUtils.TemporaryDICOMDatabase(str(folder / "database")) as database:
            DICOMUtils.importDicom(str(phantom.ct_dir), database)
            loaded = DICOMUtils.loadSeriesByUID([ct.reference.series_instance_uid])
            self.assertEqual(len(loaded), 1)
            volume = slicer.mrmlScene.GetNodeByID(loaded[0])
            self.delayDisplay("Delineating the CTV in the prediction process")
            logic = lib.CTVDelineationLogic(slicer.mrmlScene, terminologyLogic=slicer.modules.terminologies.logic(),
                                            temporaryDirectory=slicer.app.temporaryPath)
            segmentation = logic.run(volume, device="cpu")
            segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName("CTV")
            self.assertTrue(logic.terminology.isCTV(segmentation.GetSegmentation().GetSegment(segmentId)))
            predicted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, volume) != 0
            truth = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom.masks["CTV"]))) != 0
            dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
            self.assertGreater(dice, 0.75, f"CTV Dice {dice:.3f} against the phantom's truth")
            self.delayDisplay("Exporting the RTSTRUCT through the DICOM database")
            written = logic.export_rtstruct(segmentation, volume, folder / "rtstruct.dcm")
            self.assertEqual(written.seriesInstanceUID, ct.reference.series_instance_uid)
            back = sitk.GetArrayFromImage(read_rtstruct(written.path, ct, roi="CTV")["CTV"]) != 0
            self.assertTrue(np.array_equal(back, predicted), "the RTSTRUCT does not hold the segment's voxels")
        self.delayDisplay("Test passed")
