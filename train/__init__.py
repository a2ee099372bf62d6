"""Training and evaluation CLI for ArtAttr models (uses the artattr library)."""
