"""Services for a department without Slicer: the case store, the DICOM node and the browser review station.

Owns: :mod:`.store` (one folder per case, the durable SQLite index, versions, jobs) with its
:mod:`.store_schema` (the index's tables and upgrades), :mod:`.series_records` (what the index
records of the node's series and instances), :mod:`.inbox` (received instances filed, series
judged whole or not, restarts that quarantine what they do not understand) and :mod:`.outbox`
(files to send, back-off, approval), :mod:`.approvals` (what an approval changed in the AI contour, recorded),
:mod:`.records` (statuses and rows), :mod:`.peers`
(destinations and allowed peers), :mod:`.audit` (the audit log), :mod:`.instance_check` (what the
node accepts of a received instance), :mod:`.pdu_guard` (the node's connections read PDU by PDU,
within bounds), :mod:`.dicom_io` (pynetdicom Storage SCP and C-STORE sender), :mod:`.node`
(``ctv node``).

May import: the top level, :mod:`ctv_core.dicom`, :mod:`ctv_core.structures`,
:mod:`ctv_core.model`, :mod:`ctv_core.inference` (predictions run as ``ctv predict`` processes),
:mod:`ctv_core.scene` (the review station's MRML), :mod:`ctv_core.evaluation` (an approval's edit
figures). Never :mod:`ctv_core.training` or :mod:`ctv_core.dataset`, never the Slicer module.
"""
