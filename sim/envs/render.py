"""Rendering of 2-D scalar fields to RGB images (for ``Env.render`` and the example GIFs)."""
import numpy as np
import torch

__all__ = ["field_to_rgb"]

# Anchor colours of a dark-to-bright sequential map (black, purple, orange, pale yellow).
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)


def field_to_rgb(field: torch.Tensor, vmax: float = 1.0, scale: int = 8,
                 overlay: torch.Tensor | None = None) -> np.ndarray:
    """Colour-map a field ``(N, N)`` indexed ``[i (x), j (y up)]`` into an image.

    Args:
        field: scalar field, values in ``[0, vmax]`` map onto the colour map (clipped).
        vmax: value mapped to the brightest colour.
        scale: pixels per cell.
        overlay: optional ``(N, N)`` mask in ``[0, 1]`` drawn as a cyan tint (targets, detectors).

    Returns:
        ``(N * scale, N * scale, 3)`` uint8 image with y pointing up.
    """
    values = np.clip(field.detach().double().cpu().numpy() / vmax, 0.0, 1.0)
    pos = values * (len(_ANCHORS) - 1)
    lo = np.minimum(pos.astype(int), len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = (1 - frac) * _ANCHORS[lo] + frac * _ANCHORS[lo + 1]
    if overlay is not None:
        alpha = 0.35 * np.clip(overlay.detach().double().cpu().numpy(), 0.0, 1.0)[..., None]
        rgb = (1 - alpha) * rgb + alpha * np.array([0.0, 220.0, 255.0])
    image = np.transpose(rgb, (1, 0, 2))[::-1]  # rows = y from the top, columns = x
    image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    return np.ascontiguousarray(image.round().astype(np.uint8))
