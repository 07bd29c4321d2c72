"""The uncertainty controls of the module panel: "Show uncertainty" switches the prediction's uncertainty
over the CT, "Go to least certain slice" shows the next least certain CT slice in the Red view (which the CTV slice stepping
uses too: :func:`redSliceLogic`)."""

import slicer


def redSliceLogic():
    """The slice logic of the view named "Red" (found by name: its orientation is the user's choice), or None
    when the layout has none."""
    layout = slicer.app.layoutManager()
    red = layout.sliceWidget("Red") if layout is not None else None
    return red.sliceLogic() if red is not None else None


class UncertaintyPanel:
    """Drives ``ui.showUncertaintyCheckBox`` and ``ui.leastCertainButton`` over the module's logic
    (``CTVDelineationLogic``: ``setUncertaintyVisible``, ``nextLeastCertainOffset``); status lines go to
    ``ui.reviewLabel``."""

    def __init__(self, ui, logic):
        self.ui = ui
        self.logic = logic
        self._shown = None
        ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShow)
        ui.leastCertainButton.connect("clicked(bool)", self.onLeastCertainSlice)

    def update(self, result) -> None:
        """Enable the controls for a finished run's ``result`` (None: no result) that brought its uncertainty,
        and show a new run's map as the check box says."""
        uncertainty = result.uncertainty if result is not None else None
        if uncertainty is not None and uncertainty is not self._shown:
            self.logic.setUncertaintyVisible(self.ui.showUncertaintyCheckBox.checked)
        self._shown = uncertainty
        self.ui.showUncertaintyCheckBox.enabled = uncertainty is not None
        self.ui.leastCertainButton.enabled = uncertainty is not None and len(uncertainty.tour) > 0

    def onShow(self, show):
        self.logic.setUncertaintyVisible(show)

    def onLeastCertainSlice(self, checked=False):
        """The offset is along the Red view's own normal, whatever its orientation."""
        sliceLogic = redSliceLogic()
        if sliceLogic is None:
            self.ui.reviewLabel.text = "No Red slice view in this layout: choose a layout with one."
            return
        found = self.logic.nextLeastCertainOffset(sliceLogic.GetSliceNode().GetSliceToRAS())
        if found is None:
            self.ui.reviewLabel.text = "This prediction has no uncertainty figures."
            return
        self.ui.playButton.checked = False
        sliceLogic.SetSliceOffset(found[0])
        self.ui.reviewLabel.text = found[1]
