"""The model: the network and its configuration, model packages, processing settings, device runtime.

Owns: :mod:`.network_config` and :mod:`.unet3d` (the recurrent residual-SE 3D U-Net),
:mod:`.settings` (preprocessing, inference and post-processing settings of a model),
:mod:`.package` (model packages: weights, graph, checks; the bundled demo model in ``demo/``),
:mod:`.manifest` (the strict, torch-free reading of a package's manifest, the checks of the files it
names and the description a user sees),
:mod:`.graph` (the network as an OpenVINO IR sharing the weights file, read without torch) and
:mod:`.graph_export` (writing it from the PyTorch network), :mod:`.qa_config` and
:mod:`.qa_models` (the geometric QA model), :mod:`.engines` (OpenVINO on the CPU, PyTorch on CUDA
or on request), :mod:`.devices` (device choice and usable CPUs without torch), :mod:`.runtime`
(PyTorch's threads, autocast, batch-norm folding, inference preparation).

May import: the top level (no DICOM, no structures: a model knows arrays, not files of patients).
Never :mod:`ctv_core.scene` (Slicer's MRML) or the Slicer module.
"""
