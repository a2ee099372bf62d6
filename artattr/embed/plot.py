"""The explorer's plotly 3-D figure: the gallery coloured by a label, the upload as a large marker."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from .gallery import Gallery

#: Classes drawn in their own colour; the rest (and missing labels) share one grey "other" trace,
#: so 739 artists cost 20 traces, not 739, and the legend stays readable.
MAX_COLOURS = 19
OTHER_COLOUR = "#c8c8c8"
UPLOAD_COLOUR = "#000000"
#: Kelly's 22 colours of maximum contrast without white, black and grey (grey is "other", black the
#: upload), in his order: any first n of them are as far apart as n colours can be, so 11 movements
#: never get two near-identical magentas as a generic 24-colour palette gives them.
PALETTE = ["#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#008856", "#E68FAC", "#0067A5",
           "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600", "#654522", "#E25822",
           "#2B3D26"]


def _wireframe(n_lat: int = 5, n_lon: int = 12, steps: int = 60) -> tuple[list, list, list]:
    """Latitude and longitude circles of the unit sphere as one line trace (None breaks the line)."""
    xs, ys, zs = [], [], []
    t = np.linspace(0, 2 * np.pi, steps)
    for lat in np.linspace(-np.pi / 2, np.pi / 2, n_lat + 2)[1:-1]:
        xs += [*np.cos(lat) * np.cos(t), None]
        ys += [*np.cos(lat) * np.sin(t), None]
        zs += [*np.full(steps, np.sin(lat)), None]
    half = np.linspace(-np.pi / 2, np.pi / 2, steps // 2)
    for lon in np.linspace(0, np.pi, n_lon // 2, endpoint=False):
        for side in (lon, lon + np.pi):
            xs += [*np.cos(half) * np.cos(side), None]
            ys += [*np.cos(half) * np.sin(side), None]
            zs += [*np.sin(half), None]
    return xs, ys, zs


_WIREFRAME = _wireframe()


#: Pixels above the 3-D scene for plotly's toolbar.
TOOLBAR_HEIGHT = 30


def figure(gallery: Gallery, view: str = "sphere", color_by: str = "style", upload=None, height: int = 600,
           focus: Sequence[str] = ()):
    """A ``plotly.graph_objects.Figure`` of the gallery in one view ("sphere" or "umap").

    ``upload`` is the upload's xyz in that view, or the dict :meth:`Gallery.place` returns. ``focus``
    are labels that get a colour whatever their count (the predicted class, the neighbours'
    classes): with 739 artists most are grey, but never the ones the upload is compared with. The
    height is explicit because Gradio plots without one collapse to zero height.
    """
    import plotly.graph_objects as go

    if view not in gallery.coords:
        raise ValueError(f"view {view!r} is not in this gallery; choose one of {gallery.views}.")
    if color_by not in gallery.labels:
        raise ValueError(f"color_by {color_by!r} is not in this gallery; choose one of {list(gallery.labels)}.")
    xyz, codes, hover = gallery.coords[view], gallery.labels[color_by], gallery.hover
    counts = Counter(codes[codes >= 0].tolist())
    index = {name: c for c, name in enumerate(gallery.names[color_by])}
    first = list(dict.fromkeys(index[f] for f in focus if f in index and counts[index[f]]))[:MAX_COLOURS]
    shown = first + [c for c, _ in counts.most_common(MAX_COLOURS) if c not in first][:MAX_COLOURS - len(first)]
    if len(counts) <= MAX_COLOURS:
        shown.sort(key=lambda c: gallery.name(color_by, gallery.names[color_by][c]))  # few classes: alphabetical
    size = 2.5 if len(gallery) > 2000 else 4

    def points(mask: np.ndarray, name: str, colour: str, opacity: float = 0.85) -> go.Scatter3d:
        p = xyz[mask]
        return go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", name=name, hovertext=hover[mask],
                            hoverinfo="text", marker=dict(size=size, color=colour, opacity=opacity, line=dict(width=0)))

    traces = []
    if view == "sphere":
        x, y, z = _WIREFRAME
        traces.append(go.Scatter3d(x=x, y=y, z=z, mode="lines", line=dict(color="#d9d9d9", width=1),
                                   hoverinfo="skip", showlegend=False, name="sphere"))
    rest = ~np.isin(codes, shown)
    if rest.any():  # drawn first, faint, so the coloured classes stay visible through it
        traces.append(points(rest, "other" if counts.keys() - set(shown) else "unknown", OTHER_COLOUR, 0.35))
    for n, c in enumerate(shown):
        traces.append(points(codes == c, gallery.name(color_by, gallery.names[color_by][c]), PALETTE[n % len(PALETTE)]))
    if upload is not None:
        u = upload.get(view) if isinstance(upload, dict) else upload
        if u is not None:
            u = np.asarray(u, dtype=float).reshape(3)
            traces.append(go.Scatter3d(
                x=[u[0]], y=[u[1]], z=[u[2]], mode="markers", name="your painting", hovertext=["your painting"],
                hoverinfo="text", marker=dict(size=12, color=UPLOAD_COLOUR, symbol="diamond",
                                              line=dict(color="#ffffff", width=2))))

    axis = dict(visible=False, showspikes=False)
    if view == "sphere":
        axis["range"] = [-1.05, 1.05]
    fig = go.Figure(traces)
    # The legend sits below the scene, not over it (on a phone a side legend hid half the sphere),
    # and the camera is as close as it can be without cutting anything off: the sphere then spans
    # ~94 % of the scene's height; UMAP's cloud reaches into its box's corners and needs more room.
    # Plotly's toolbar gets a strip of its own above the scene: over it, it hid the top of the sphere.
    eye = dict(x=0.84, y=0.84, z=0.54) if view == "sphere" else dict(x=1.05, y=1.05, z=0.67)
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=TOOLBAR_HEIGHT, b=0), uirevision=view,
        legend=dict(orientation="h", itemsizing="constant", x=0, y=0, yanchor="top", font=dict(size=11),
                    traceorder="normal"),
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube", dragmode="orbit",
                   domain=dict(x=[0, 1], y=[0, 1]),
                   camera=dict(eye=eye, up=dict(x=0, y=0, z=1)),
                   uirevision=view),
    )
    return fig
