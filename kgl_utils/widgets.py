"""An ipywidgets comparison of priors and models for JupyterLab, over a finished study's files."""

from __future__ import annotations

import cv2
import ipywidgets as widgets
import numpy as np

from kgl_utils.plots import heatmap, overlay
from kgl_utils.stages.context import StudyContext
from kgl_utils.stages.visualization import shown_models
from kgl_utils.units.cells import cell_segmentation
from kgl_utils.units.priors import prior_maps


def png(picture: np.ndarray, scale: int = 2) -> bytes:
    """An RGB float image in [0, 1] as PNG bytes, enlarged for the screen."""
    rgb = (np.clip(picture, 0, 1) * 255).astype(np.uint8)
    rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


class SaliencyComparison:
    """Choose a test image, a prior method and a model; panels side by side, opacity slider.

    Everything is read once from saved outputs; redrawing only recomposes three small images,
    sent as PNGs, so the widget needs no plotting backend and builds without a display.
    """

    def __init__(self, ctx: StudyContext):
        seed, fold = ctx.config.seeds[0], ctx.folds[0]
        self.test = ctx.arrays("test", fold)
        self.priors = {m: prior_maps(ctx, m, "test", seed, fold)
                       for m in ctx.config.prior.methods}
        self.models = {name: cell_segmentation(ctx, cell)
                       for name, cell in shown_models(ctx).items()}
        labels = self.test.labels
        order = [*np.flatnonzero(labels == 1), *np.flatnonzero(labels == 0)]
        self.image = widgets.Dropdown(
            options=[(f"{self.test.ids[i]} ({'defect' if labels[i] else 'clean'})", int(i))
                     for i in order], description="image")
        self.prior = widgets.Dropdown(options=list(self.priors), description="prior")
        self.model = widgets.Dropdown(options=list(self.models), description="model",
                                      layout=widgets.Layout(width="420px"))
        self.opacity = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.05,
                                           description="opacity")
        self.titles = [widgets.Label() for _ in range(3)]
        self.pictures = [widgets.Image(format="png") for _ in range(3)]
        for control in (self.image, self.prior, self.model, self.opacity):
            control.observe(lambda _: self.draw(), names="value")
        panels = [widgets.VBox([t, p]) for t, p in zip(self.titles, self.pictures)]
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.prior]), widgets.HBox([self.model, self.opacity]),
            widgets.HBox(panels)])
        self.draw()

    def panels(self) -> list[tuple[str, np.ndarray]]:
        i, alpha = self.image.value, self.opacity.value
        image = self.test.images[i]
        return [("image + ground truth", overlay(image, self.test.masks[i], alpha)),
                (f"prior: {self.prior.value}",
                 heatmap(image, self.priors[self.prior.value][i], alpha)),
                (self.model.value, heatmap(image, self.models[self.model.value][i], alpha))]

    def draw(self) -> None:
        for title, picture, (text, rgb) in zip(self.titles, self.pictures, self.panels()):
            title.value = text
            picture.value = png(rgb)


def comparison_widget(ctx: StudyContext) -> widgets.VBox:
    """The widget to display in a notebook cell."""
    return SaliencyComparison(ctx).widget
