"""The browser review station (``ctv review``): upload a CT, review the CTV slice by slice, edit it with Slicer's
Segment Editor, keep every version, download RTSTRUCT, SEG or NIfTI; an HTTP API beside the page.

Owns: :mod:`.config` (the station's settings, who may connect), :mod:`.uploads` (what an upload
may put on disk: zip safety, limits), :mod:`.desk` (uploads into cases with their prediction
queued, versions, re-runs, cancel, approval; no Slicer), :mod:`.access` (the access token and
host checks on every request), :mod:`.api` (the HTTP API's handlers), :mod:`.scene` (the MRML
scene of the open case), :mod:`.autoplay` (stepping through the CTV's slices), :mod:`.versions`
(saving an edit as a new version), :mod:`.page` (the page's widgets), :mod:`.app` (the page's
state and actions) and :mod:`.server` (starting it all in one process).

May import: what :mod:`ctv_core.service` may import (the top level, :mod:`ctv_core.dicom`,
:mod:`ctv_core.structures`, :mod:`ctv_core.model`, :mod:`ctv_core.inference`,
:mod:`ctv_core.scene`), the rest of :mod:`ctv_core.service`, and, in the modules that need Slicer
(scene, autoplay, versions, app, page, server) and only when they run, the ``review`` extra:
trame, trame-slicer, slicer-core, and :mod:`ctv_core.scene` (the MRML conversions the Slicer
module uses too). Never the Slicer module itself. :mod:`.config`, :mod:`.uploads`, :mod:`.desk`,
:mod:`.access` and :mod:`.api` import no Slicer.
"""
