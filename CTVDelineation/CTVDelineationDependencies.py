"""The Dependencies section of the module panel: what is missing, the consent, the installation in a
process of its own with pip's last line as progress, Cancel, and one message at the end."""

import qt
import slicer


class DependenciesPanel:
    """Drives ``ui.dependenciesLabel``, ``ui.installDependenciesButton`` and
    ``ui.dependenciesCollapsibleButton`` over a ``DependencyLogic`` (``Logic/Dependencies.py``)."""

    def __init__(self, ui, dependencies):
        self.ui = ui
        self.logic = dependencies
        self.installation = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.connect("timeout()", self.onPoll)
        ui.installDependenciesButton.connect("clicked(bool)", self.onInstall)

    def show(self):
        plan = self.logic.plan()
        self.ui.dependenciesLabel.text = self.logic.describe(plan)
        self.ui.installDependenciesButton.enabled = not plan.empty
        self.ui.installDependenciesButton.text = "Install"
        if not plan.empty:
            self.ui.dependenciesCollapsibleButton.collapsed = False

    def wantTorch(self, wantsTorch: bool, makeLogic) -> None:
        """PyTorch is a dependency only when the user chose a GPU (device cuda) or the PyTorch engine (the CPU
        runs the network with OpenVINO): ``makeLogic(withTorch=...)`` gives the logic for the new choice, shown
        at once; nothing changes while an installation runs."""
        if self.installation is None and getattr(self.logic, "withTorch", None) not in (None, wantsTorch):
            self.logic = makeLogic(withTorch=wantsTorch)
            self.show()

    def onInstall(self, checked=False):
        """Install, after the user agreed to the list of what will be installed; while it runs the
        button cancels it."""
        if self.installation is not None:
            self.installation.cancel()
            return
        plan = self.logic.plan()
        if plan.empty or not slicer.util.confirmOkCancelDisplay(
                self.logic.describe(plan), windowTitle="CTV Delineation: install packages"):
            return
        self.installation = self.logic.startInstall(plan)
        self.ui.installDependenciesButton.text = "Cancel installation"
        self.timer.start()
        self.onPoll()

    def onPoll(self):
        job = self.installation
        if job is None:
            self.timer.stop()
            return
        if job.poll():
            self.ui.dependenciesLabel.text = f"Installing\u2026 {job.lastLine}"
            return
        self.timer.stop()
        self.installation = None
        ok, message = self.logic.outcome(job)
        self.show()
        (slicer.util.infoDisplay if ok else slicer.util.errorDisplay)(message, windowTitle="CTV Delineation")

    def cleanup(self):
        if self.installation is not None:
            self.installation.cancel()
        self.timer.stop()
