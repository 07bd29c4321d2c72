"""Evaluation: metrics with their exact definitions, and the evaluation of files or folders of cases.

Owns: :mod:`.metrics` (Dice, HD95, mean surface distance, surface Dice, volumes), :mod:`.surfaces`
(surface points, areas and distances through MONAI),
:mod:`.summary` (summaries and the CSV and plot files), :mod:`.case_files` (which files make a
case), :mod:`.evaluate` (``evaluate_folder``: ``ctv evaluate``).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`.
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
