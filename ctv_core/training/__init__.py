"""Training: configuration, cases and patches, augmentation, the objective, the loop, checkpoints, export.

Owns: :mod:`.config` (``TrainingConfig``; its ``quality`` section in :mod:`.quality_config`,
``schedule`` in :mod:`.schedule_config`), :mod:`.presets` (``ctv train --preset``),
:mod:`.cases` (cases prepared on the model grid by inference's own preprocessing),
:mod:`.split` (folds by patient), :mod:`.patches` (seeded patch sampling and step batches),
:mod:`.augmentation`, :mod:`.losses` (per-sample terms), :mod:`.objective` (per-sample losses,
then a replaceable sample weighting), :mod:`.quality` (learned sample weights for noisy labels:
the QAM/OCM), :mod:`.label_noise` (simulated noisy contours for experiments), :mod:`.step`
(one optimiser step, micro-batched), :mod:`.loop` (``train``), :mod:`.events` (what a run
tells its caller: the start-up summary, the expected time, progress), :mod:`.interrupts`
(a stop by Ctrl+C/SIGTERM saves the step under way), :mod:`.checkpoints` (named
modules and optimisers), :mod:`.run_folder` (the run's files and logs), :mod:`.distributed`
(torchrun processes, global batch norm), :mod:`.validation`, :mod:`.export` (a model package
from a run, the network only).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`, :mod:`ctv_core.inference`, :mod:`ctv_core.dataset` (the reader) and
:mod:`ctv_core.evaluation` (its Dice, so validation and evaluation count alike).
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
