"""The review page: case list and upload on the left, Slicer's views in the middle, review and editing on the right.

Declarative only: the widgets, bound to the state names of :mod:`.app` (``ctv_*``) and to its
triggers. Uploads go from the browser straight to the HTTP API (``POST api/cases``, with the
series choice through ``api/uploads/.../cases``) with a progress bar, so the page and scripts
share one way in; the page then asks the server to open the new case. Downloads are plain links
to the API. The views, their slice sliders and the Segment Editor panel are trame-slicer's.
"""

from __future__ import annotations

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3

#: In the browser: upload files (one zip as the body, else multipart) and choose a series, through the API.
UPLOAD_SCRIPT = r"""
window.ctvSend = function (url, body, type) {
  const state = window.trame.state;
  const xhr = new XMLHttpRequest();
  xhr.open('POST', url);
  if (type) xhr.setRequestHeader('Content-Type', type);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) state.set('ctv_upload_progress', Math.round(100 * e.loaded / e.total));
  };
  xhr.onload = () => {
    let answer = {};
    try { answer = JSON.parse(xhr.responseText); } catch (err) { answer = {message: xhr.statusText}; }
    state.set('ctv_upload_progress', -1);
    if (xhr.status === 201) {
      state.set('ctv_series_choice', null);
      window.trame.trigger('ctv_uploaded', [answer.id, answer.note || '']);
    } else if (xhr.status === 409 && answer.series) {
      state.set('ctv_series_choice', answer);
    } else {
      state.set('ctv_series_choice', null);
      state.set('ctv_upload_message', answer.message || ('The upload failed: ' + xhr.status));
    }
  };
  xhr.onerror = () => {
    state.set('ctv_upload_progress', -1);
    state.set('ctv_upload_message', 'The upload did not reach the station; check the connection.');
  };
  state.set('ctv_upload_message', '');
  state.set('ctv_upload_progress', 0);
  xhr.send(body);
};
window.ctvUpload = function (files) {
  if (!files || !files.length) return;
  if (files.length === 1 && /\.zip$/i.test(files[0].name)) {
    window.ctvSend('api/cases', files[0], 'application/zip');
    return;
  }
  const form = new FormData();
  for (const f of files) form.append('files', f, f.webkitRelativePath || f.name);
  window.ctvSend('api/cases', form, null);
};
window.ctvChoose = function (upload, uid) {
  window.ctvSend('api/uploads/' + upload + '/cases', JSON.stringify({series: uid}), 'application/json');
};
"""

STATUS_COLOURS = "{queued: 'grey', running: 'blue', done: 'green', failed: 'red'}"


def build_page(server, layout_manager):
    """Build the page; returns trame-slicer's Segment Editor panel (its logic binds to it)."""
    with VAppLayout(server, fill_height=True) as layout:
        layout.root.theme = "dark"
        client.Style("html { overflow-y: hidden; } .ctv-small { font-size: 0.8rem; }")
        client.Script(UPLOAD_SCRIPT)
        with v3.VAppBar(density="compact"):
            v3.VAppBarTitle("CTV review station")
            html.Input(type="file", id="ctv-upload-input", multiple=True, style="display: none",
                       change="window.ctvUpload($event.target.files); $event.target.value = ''")
            html.Input(type="file", id="ctv-upload-folder", multiple=True, style="display: none",
                       change="window.ctvUpload($event.target.files); $event.target.value = ''",
                       __properties=[("webkitdirectory", "webkitdirectory")], webkitdirectory=True)
            v3.VBtn("Upload zip or files", prepend_icon="mdi-upload", id="ctv-upload",
                    click="window.document.getElementById('ctv-upload-input').click()")
            v3.VBtn("Upload folder", prepend_icon="mdi-folder-upload",
                    click="window.document.getElementById('ctv-upload-folder').click()")
            v3.VProgressLinear(v_if="ctv_upload_progress >= 0", model_value=("ctv_upload_progress",),
                               absolute=True, location="bottom", color="primary")
        _case_list()
        with v3.VNavigationDrawer(permanent=True, location="right", width=420):
            editor_ui = _review_panel()
        with v3.VMain(), html.Div(classes="d-flex flex-row fill-height"):
            layout_manager.initialize_layout_grid(layout)
        _dialogs()
    return editor_ui


def _case_list() -> None:
    with v3.VNavigationDrawer(permanent=True, location="left", width=320):
        v3.VAlert(v_if="ctv_upload_message", text=("ctv_upload_message",), type="error", density="compact",
                  closable=True, id="ctv-upload-message", classes="ma-2", click_close="ctv_upload_message = ''")
        v3.VListSubheader("Cases ({{ ctv_cases.length }})")
        with v3.VList(density="compact", nav=True, id="ctv-cases"):
            with v3.VListItem(v_for="c in ctv_cases", key="c.id", value=("c.id",),
                              active=("c.id === ctv_open_id",), click="trigger('ctv_open_case', [c.id])"):
                v3.VListItemTitle("{{ c.description || c.id }}", classes="ctv-small")
                with v3.VListItemSubtitle(classes="ctv-small"):
                    html.Span("{{ c.id }} · {{ c.source }} · ")
                    v3.VChip("{{ c.status }}", size="x-small", color=(f"{STATUS_COLOURS}[c.status]",))
                v3.VProgressLinear(v_if="c.progress", model_value=("100 * c.progress.fraction",), height=3,
                                   color="blue", indeterminate=("c.status === 'queued'",))
                html.Div("{{ c.message }}", v_if="c.status === 'failed'", classes="text-red ctv-small")


def _review_panel():
    from trame_slicer.app.ui import SegmentEditorUI

    with html.Div(classes="pa-3", v_if="!ctv_open"):
        html.Div("Upload a CT (a zip of its DICOM folder, or its files), or choose a case on the left.")
    with html.Div(classes="pa-3 pb-0", v_if="ctv_open", id="ctv-review"):
        html.Div("{{ ctv_open.description }}", classes="text-subtitle-2")
        with html.Div(classes="ctv-small mb-1"):
            html.Span("{{ ctv_open.id }} · ")
            v3.VChip("{{ ctv_open.status }}", size="x-small", id="ctv-open-status",
                     color=(f"{STATUS_COLOURS}[ctv_open.status]",))
        with html.Div(v_if="ctv_open.progress", classes="mb-1"):
            v3.VProgressLinear(model_value=("100 * ctv_open.progress.fraction",), height=8, color="blue",
                               id="ctv-progress", indeterminate=("ctv_open.status === 'queued'",))
            with html.Div(classes="d-flex align-center ctv-small"):
                html.Span("{{ ctv_open.status }} {{ ctv_open.progress.stage }} "
                          "{{ Math.round(100 * ctv_open.progress.fraction) }}%")
                v3.VSpacer()
                v3.VBtn("Cancel", size="small", color="red", variant="tonal", id="ctv-cancel",
                        click="trigger('ctv_cancel')")
        v3.VAlert(v_if="ctv_open.status === 'failed'", text=("ctv_open.message",), type="error", density="compact",
                  classes="mb-1 ctv-small", id="ctv-failure")
        html.Div("{{ ctv_shown }}", id="ctv-shown", classes="ctv-small mb-1")
        html.Div("{{ ctv_status }}", id="ctv-status", classes="ctv-small text-medium-emphasis mb-1")
        with v3.VTabs(v_model=("ctv_tab", "review"), density="compact", grow=True):
            v3.VTab("Review", value="review", id="ctv-tab-review")
            v3.VTab("Edit", value="edit", id="ctv-tab-edit")
            v3.VTab("Versions", value="versions", id="ctv-tab-versions")
    with html.Div(v_show="ctv_open && ctv_tab === 'review'", classes="pa-3"):
        _review_tab()
    with html.Div(v_show="ctv_open && ctv_tab === 'edit'", classes="px-3"):
        with html.Div(style="height: calc(100vh - 420px); min-height: 380px; position: relative"):
            editor_ui = SegmentEditorUI()
        with html.Div(classes="d-flex"):
            editor_ui.build_undo_redo_buttons()
        v3.VTextField(v_model=("ctv_author", ""), label="Your name", density="compact", hide_details=True,
                      id="ctv-author", classes="mt-2")
        v3.VTextField(v_model=("ctv_note", ""), label="Note (optional)", density="compact", hide_details=True,
                      classes="mt-2")
        v3.VBtn("Save as new version", prepend_icon="mdi-content-save", color="primary", block=True,
                classes="mt-2", id="ctv-save", disabled=("!ctv_shown_version",), click="trigger('ctv_save')")
    with html.Div(v_show="ctv_open && ctv_tab === 'versions'", classes="pa-3", id="ctv-versions"):
        _versions()
    return editor_ui


def _review_tab() -> None:
    v3.VAlert(v_for="w in ctv_warnings", text=("w",), type="warning", density="compact", classes="mb-1 ctv-small")
    html.Div("Window", classes="ctv-small text-medium-emphasis")
    with v3.VBtnToggle(v_model=("ctv_window", "soft tissue"), density="compact", mandatory=True, variant="outlined",
                       classes="mb-3"):
        v3.VBtn("Soft tissue", value="soft tissue", size="small", id="ctv-window-soft")
        v3.VBtn("Bone", value="bone", size="small", id="ctv-window-bone")
    v3.VSwitch(v_model=("ctv_uncertainty", True), label="Uncertainty over the CT", color="orange",
               disabled=("!ctv_uncertainty_available",), density="compact", hide_details=True, id="ctv-uncertainty")
    html.Div("CTV slices (axial view)", classes="ctv-small text-medium-emphasis")
    with html.Div(classes="d-flex align-center mb-1"):
        v3.VBtn(icon="mdi-skip-previous", size="small", id="ctv-prev", click="trigger('ctv_step', [-1])")
        v3.VBtn(icon=("ctv_playing ? 'mdi-pause' : 'mdi-play'",), size="small", id="ctv-play",
                click="trigger('ctv_play')")
        v3.VBtn(icon="mdi-skip-next", size="small", id="ctv-next", click="trigger('ctv_step', [1])")
        v3.VSelect(v_model=("ctv_speed", 1.0), items=("ctv_speeds", [0.5, 1.0, 2.0, 4.0]), density="compact",
                   label="Speed", suffix="x", hide_details=True, classes="ml-2", style="max-width: 120px")
    v3.VSwitch(v_model=("ctv_least_certain_first", False), label="Least certain slices first", density="compact",
               disabled=("!ctv_uncertainty_available",), hide_details=True, id="ctv-least-certain-first")
    html.Div("{{ ctv_position }}", id="ctv-position", classes="ctv-small mb-3")
    html.Div("Fill, outline and opacity of the CTV, and the 3D surface, are under Edit > Rendering. Every view has "
             "its own slice slider; the mouse wheel moves through slices, right-drag zooms.",
             classes="ctv-small text-medium-emphasis")


def _versions() -> None:
    with html.Div(v_for="v in (ctv_open ? ctv_open.versions : [])", key="v.number",
                  classes="mb-3 ctv-small ctv-version", id=("'ctv-version-' + v.number",)):
        with html.Div(classes="d-flex align-center"):
            html.B("v{{ v.number }} {{ v.kind }}")
            v3.VChip("shown", v_if="v.number === ctv_shown_version", size="x-small", color="primary",
                     classes="ml-1")
            v3.VChip("approved", v_if="v.number === ctv_open.approved_version", size="x-small", color="green",
                     classes="ml-1")
            v3.VSpacer()
            v3.VBtn("Open", size="x-small", variant="tonal", click="trigger('ctv_show_version', [v.number])")
            v3.VBtn("Approve", size="x-small", variant="tonal", classes="ml-1",
                    click="trigger('ctv_approve', [v.number])")
        html.Div("{{ v.created }} · {{ v.author || v.model || 'model' }}{{ v.note ? ' · ' + v.note : '' }}")
        with html.Div():
            html.A("{{ f }}", v_for="f in v.files", key="f", classes="mr-2",
                   href=("'api/cases/' + ctv_open.id + '/versions/' + v.number + '/' + f",), download=True)
    with html.Div(classes="d-flex align-center mt-2"):
        v3.VSelect(v_model=("ctv_rerun_model", ""), items=("ctv_models", []), label="Model", density="compact",
                   hide_details=True)
        v3.VBtn("Run again", size="small", classes="ml-2", click="trigger('ctv_rerun')")


def _dialogs() -> None:
    with v3.VDialog(model_value=("!!ctv_series_choice",), max_width=760, persistent=True):
        with v3.VCard(title="Choose the CT series to delineate", id="ctv-series-choice"):
            v3.VCardText("{{ ctv_series_choice && ctv_series_choice.message }}")
            with v3.VList(density="compact"):
                v3.VListItem(v_for="s in (ctv_series_choice ? ctv_series_choice.series : [])", key="s.uid",
                             title=("s.description || s.uid",), subtitle=("s.summary",),
                             click="window.ctvChoose(ctv_series_choice.upload, s.uid)")
            with v3.VCardActions():
                v3.VBtn("Cancel", click="ctv_series_choice = null")
    with v3.VDialog(model_value=("!!ctv_confirm_open",), max_width=520, persistent=True):
        with v3.VCard(title="Unsaved edit"):
            v3.VCardText("The CTV shown was edited and not saved. Discard the edit and open the other case or "
                         "version?")
            with v3.VCardActions():
                v3.VBtn("Keep editing", click="ctv_confirm_open = null")
                v3.VBtn("Discard the edit", color="red",
                        click="trigger('ctv_open_confirmed', [ctv_confirm_open]); ctv_confirm_open = null")
