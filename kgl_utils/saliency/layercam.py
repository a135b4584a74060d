"""LayerCAM over one or several target layers, several fused as the method's authors fuse them.

LayerCAM (Jiang et al. 2021, "LayerCAM: Exploring Hierarchical Class Activation Maps for
Localization") weights each activation by its positive gradient, so it gives reliable maps at
shallow layers too; conv5_3 alone has a stride of 16, too coarse for thin defects.
"""

from __future__ import annotations

import numpy as np
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.image import scale_cam_image

FUSION_GAMMA = 2.0
"""γ of the paper's scaling ``tanh(γ · M)`` of a normalised layer map M before fusion."""


class FusedLayerCAM(LayerCAM):
    """``pytorch_grad_cam.LayerCAM`` that fuses several target layers as the paper does.

    Each layer's LayerCAM map M (rectified, min-max normalised, resized to the input) is
    scaled to ``tanh(γ·M)`` and the layers are fused by their element-wise maximum. The
    package's own aggregation averages the layers' maps instead, which lets the coarse deep
    blob dilute the sharp evidence of a shallow layer; the maximum keeps each layer's evidence
    where it is strongest. The paper scales the shallow layers, whose normalised maps are faint
    (γ = 2); a list of layers does not say which are shallow, so every listed layer is scaled
    alike (tanh is monotone: no layer's own ranking of pixels changes). A single layer is left
    as the package gives it, so one-layer priors stay what they were.
    """

    def aggregate_multi_layers(self, cam_per_target_layer: list[np.ndarray]) -> np.ndarray:
        if len(cam_per_target_layer) == 1:
            return super().aggregate_multi_layers(cam_per_target_layer)
        # Each entry is B×1×H×W; rescaled as a lone layer's map would be.
        layers = np.stack([scale_cam_image(cam[:, 0]) for cam in cam_per_target_layer])
        return np.tanh(FUSION_GAMMA * layers).max(axis=0)
