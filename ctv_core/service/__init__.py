"""Services for a department without Slicer: the case store, the DICOM node and the browser review station.

Owns: :mod:`.store` (one folder per case, the durable SQLite index, versions, jobs) with its
:mod:`.inbox` (received instances, complete series) and :mod:`.outbox` (files to send, back-off,
approval), :mod:`.records` (statuses and rows), :mod:`.peers` (destinations and allowed peers),
:mod:`.audit` (the audit log), :mod:`.dicom_io` (pynetdicom Storage SCP and C-STORE sender),
:mod:`.node` (``ctv node``).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`, :mod:`ctv_core.inference` (predictions run as ``ctv predict`` processes).
Never :mod:`ctv_core.training` or :mod:`ctv_core.dataset`.
"""
