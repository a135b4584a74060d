"""An ipywidgets comparison of priors and models for JupyterLab, over a finished study's files."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from kgl_utils.plots import heatmap, overlay
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.priors import prior_maps
from kgl_utils.stages.visualization import load_predictions, shown_models


class SaliencyComparison:
    """Choose a test image, a prior method and a model; panels side by side, opacity slider.

    Everything is read once from saved outputs; redrawing only recomposes images.
    """

    def __init__(self, ctx: StudyContext):
        fold = ctx.folds[0]
        self.test = ctx.arrays("test", fold)
        self.priors = {m: prior_maps(ctx, m, "test", fold) for m in ctx.config.prior.methods}
        self.models = {name: load_predictions(ctx, cell).seg
                       for name, cell in shown_models(ctx).items()}
        positives = np.flatnonzero(self.test.labels == 1)
        order = [*positives, *np.flatnonzero(self.test.labels == 0)]
        self.image = widgets.Dropdown(
            options=[(f"{self.test.ids[i]} ({'defect' if self.test.labels[i] else 'clean'})",
                      int(i)) for i in order], description="image")
        self.prior = widgets.Dropdown(options=list(self.priors), description="prior")
        self.model = widgets.Dropdown(options=list(self.models), description="model")
        self.opacity = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.05,
                                           description="opacity")
        self.output = widgets.Output()
        for control in (self.image, self.prior, self.model, self.opacity):
            control.observe(lambda _: self.draw(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.prior]), widgets.HBox([self.model, self.opacity]),
            self.output])
        self.draw()

    def panels(self) -> list[tuple[str, np.ndarray]]:
        i, alpha = self.image.value, self.opacity.value
        image = self.test.images[i]
        return [("image + ground truth", overlay(image, self.test.masks[i], alpha)),
                (f"prior: {self.prior.value}",
                 heatmap(image, self.priors[self.prior.value][i], alpha)),
                (self.model.value, heatmap(image, self.models[self.model.value][i], alpha))]

    def draw(self) -> None:
        self.output.clear_output(wait=True)
        with self.output:
            panels = self.panels()
            fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
            for ax, (title, picture) in zip(axes, panels):
                ax.imshow(np.clip(picture, 0, 1))
                ax.set_title(title, fontsize=9)
                ax.axis("off")
            plt.show()
            plt.close(fig)


def comparison_widget(ctx: StudyContext) -> widgets.VBox:
    """The widget to display in a notebook cell."""
    return SaliencyComparison(ctx).widget
