"""ArtAttr: who painted it, in which movement, what genre — and why the model thinks so.

``import artattr`` stays light (no gradio, captum or umap) so the CLI and app start fast;
explanations live in ``artattr.explain`` and the explorer in ``artattr.embed``.
"""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, ModelConfig, load_checkpoint, save_checkpoint  # noqa: E402
from .images import load_image  # noqa: E402
from .predictor import Output, Predictor, load  # noqa: E402
from .registry import create_model, list_models, register_model  # noqa: E402

__all__ = [
    "CheckpointError", "ModelConfig", "Output", "Predictor", "create_model", "list_models",
    "load", "load_checkpoint", "load_image", "register_model", "save_checkpoint", "__version__",
]
