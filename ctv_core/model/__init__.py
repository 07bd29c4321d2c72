"""The model: the network and its configuration, model packages, processing settings, device runtime.

Owns: :mod:`.network_config` and :mod:`.unet3d` (the recurrent residual-SE 3D U-Net),
:mod:`.settings` (preprocessing, inference and post-processing settings of a model),
:mod:`.manifest` (the strict, torch-free reading of a package's manifest and the description a
user sees), :mod:`.package` (model packages: safetensors weights, checks, loading; the bundled demo
model in ``demo/``), :mod:`.qa_models` (the geometric QA model), :mod:`.runtime` (device choice,
threads, autocast, batch-norm folding, inference preparation).

May import: the top level (no DICOM, no structures: a model knows arrays, not files of patients).
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
