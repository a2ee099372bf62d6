"""The explorer's plotly 3-D figure: the gallery coloured by a label, the upload as a large marker."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .gallery import Gallery, pretty

#: Classes drawn in their own colour; the rest (and missing labels) share one grey "other" trace,
#: so 739 artists cost 21 traces, not 739, and the legend stays readable.
MAX_COLOURS = 20
OTHER_COLOUR = "#b8b8b8"
UPLOAD_COLOUR = "#000000"


def _palette() -> list[str]:
    from plotly.colors import qualitative

    return [c for c in qualitative.Dark24 if c.upper() != "#222A2A"]  # near-black is the upload's colour


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


def figure(gallery: Gallery, view: str = "sphere", color_by: str = "style", upload=None, height: int = 600):
    """A ``plotly.graph_objects.Figure`` of the gallery in one view ("sphere" or "umap").

    ``upload`` is the upload's xyz in that view, or the dict :meth:`Gallery.place` returns. The
    height is explicit because Gradio plots without one collapse to zero height.
    """
    import plotly.graph_objects as go

    if view not in gallery.coords:
        raise ValueError(f"view {view!r} is not in this gallery; choose one of {gallery.views}.")
    if color_by not in gallery.labels:
        raise ValueError(f"color_by {color_by!r} is not in this gallery; choose one of {list(gallery.labels)}.")
    xyz, codes, hover = gallery.coords[view], gallery.labels[color_by], gallery.hover
    counts = Counter(codes[codes >= 0].tolist())
    shown = [c for c, _ in counts.most_common(MAX_COLOURS)]
    if len(counts) <= MAX_COLOURS:
        shown.sort(key=lambda c: gallery.names[color_by][c])  # few classes: alphabetical legend
    palette = _palette()
    size = 2.5 if len(gallery) > 2000 else 4

    def points(mask: np.ndarray, name: str, colour: str) -> go.Scatter3d:
        p = xyz[mask]
        return go.Scatter3d(x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="markers", name=name, hovertext=hover[mask],
                            hoverinfo="text", marker=dict(size=size, color=colour, opacity=0.8, line=dict(width=0)))

    traces = []
    if view == "sphere":
        x, y, z = _WIREFRAME
        traces.append(go.Scatter3d(x=x, y=y, z=z, mode="lines", line=dict(color="#d9d9d9", width=1),
                                   hoverinfo="skip", showlegend=False, name="sphere"))
    for n, c in enumerate(shown):
        traces.append(points(codes == c, pretty(color_by, gallery.names[color_by][c]), palette[n % len(palette)]))
    rest = ~np.isin(codes, shown)
    if rest.any():
        traces.append(points(rest, "other" if counts.keys() - set(shown) else "unknown", OTHER_COLOUR))
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
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=30, b=0), uirevision=view,
        legend=dict(title=dict(text=color_by), itemsizing="constant", x=1.0, xanchor="right", y=1.0),
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube", dragmode="orbit",
                   camera=dict(eye=dict(x=1.35, y=1.35, z=0.85), up=dict(x=0, y=0, z=1)),
                   uirevision=view),
        title=dict(text="ArcFace sphere" if view == "sphere" else "UMAP of the retrieval embedding", x=0.01, y=0.99),
    )
    return fig
