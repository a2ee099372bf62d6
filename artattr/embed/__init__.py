"""3-D embedding explorer: where an upload sits among known paintings, and which are most similar.

``Gallery.load(model_dir)`` reads the checkpoint's gallery (None if it has none), ``gallery.place``
puts an upload in the ArcFace-sphere and UMAP views, ``nearest`` finds similar works and ``figure``
draws the plotly 3-D map. Nothing here imports umap or numba: the gallery is fitted offline by
``python -m train gallery``.
"""

from .gallery import GALLERY_DIR, Gallery, Neighbour, nearest, title_from_path
from .plot import figure

__all__ = ["GALLERY_DIR", "Gallery", "Neighbour", "figure", "nearest", "title_from_path"]
