"""Built-in architectures; importing this package registers them."""

from . import efficientnet, resnet, vit  # noqa: F401
from .heads import EMBEDDING_KEYS, ArcMargin, MultiTaskModel

__all__ = ["EMBEDDING_KEYS", "ArcMargin", "MultiTaskModel"]
