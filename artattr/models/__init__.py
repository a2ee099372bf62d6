"""Built-in architectures; importing this package registers them."""

from . import efficientnet, metric, onelayer, resnet, rla, vit, wikiart_cnn  # noqa: F401
from .heads import EMBEDDING_KEYS, ArcMargin, MultiTaskModel

__all__ = ["EMBEDDING_KEYS", "ArcMargin", "MultiTaskModel"]
