"""Prediction: a CT image in, the CTV mask on that CT out, and the ``ctv predict`` job around it.

Owns: :mod:`.preprocessing` (CT to network input and probability back to a mask on the CT:
both directions, used by training too), :mod:`.sliding_window`, :mod:`.postprocessing`,
:mod:`.predictor` (``CTVPredictor`` and its warnings), :mod:`.predict_job` (load, predict,
write the output set and ``report.json``), :mod:`.qa_image` (``qa.png``), :mod:`.uncertainty` (the voxel uncertainty map and per-slice
scores), :mod:`.process_protocol`
(the prediction-process protocol every door speaks), :mod:`.worker` (the Slicer module's prediction
process).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`. Never :mod:`ctv_core.dataset` or :mod:`ctv_core.training`: the Slicer
module and the services import inference alone.
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
