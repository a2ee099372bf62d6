"""The one definition of what a model sees: decode → resize → normalise, built from ``ModelConfig``.

Serving (:class:`artattr.Predictor`), training, evaluation and gallery export all go through
:class:`Preprocess`, so a model is fed at inference exactly the pixels it was trained and scored
on (``tests/test_parity.py``). Kept apart from the predictor so the trainer's DataLoader workers
can use it without a model. Deciding what to feed (decode, find the painting, resize) needs no torch,
which is imported on first use: the CLI's decoding processes start in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from .images import ImageInput, load_image
from .locate import DECODE_SIZE, View, locate_views

if TYPE_CHECKING:
    import torch

RESIZE_MODES = ("squash", "center_crop")
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}
#: Pictures smaller than this on a side are refused: too little to judge.
MIN_SIDE = 32
#: Pillow's reducing_gap: a JPEG-draft-like box reduction first, then the filter; fast and close to exact
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Preprocess:
    size: int = 160
    #: "squash": whole image to size×size, how WikiArt-11 was made; "center_crop": short side then crop
    resize_mode: str = "squash"
    mean: tuple[float, ...] = tuple(IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(IMAGENET_STD)
    resample: str = "bilinear"
    #: the model can confirm a quad the locator is unsure of (it has an artwork head): :meth:`views`
    #: then shows it the whole image and up to two cut-outs (:func:`artattr.output.pick` chooses). Out of the
    #: repr, which keys the trainer's feature cache: it changes no pixel.
    confirm: bool = field(default=False, repr=False)

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, not {self.resize_mode!r}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {tuple(RESAMPLE)}, not {self.resample!r}")
        if not (isinstance(self.size, int) and 1 <= self.size <= 4096):
            raise ValueError(f"input_size must be an integer from 1 to 4096, not {self.size!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), not {self.mean!r} / {self.std!r}")

    @classmethod
    def from_config(cls, config: ModelConfig) -> "Preprocess":
        return cls(int(config.input_size), config.resize, tuple(map(float, config.mean)), tuple(map(float, config.std)),
                   config.resample, confirm="artwork" in config.thresholds)

    def load(self, image: ImageInput) -> Image.Image:
        """Decode (see :func:`artattr.images.load_image`), skipping detail the model never sees: a JPEG
        decodes at the smallest DCT scale still covering the input size."""
        return load_image(image, draft_size=self.size)

    def find(self, image: ImageInput, locate: bool = True) -> tuple[Image.Image, np.ndarray | None]:
        """Decode an upload and cut out the painting (:func:`artattr.locate.locate_painting`):
        ``(picture, corners)``, corners ``None`` when the whole image is used."""
        return self.views(image, locate, maybe=False)[0][:2]

    def views(self, image: ImageInput, locate: bool = True, maybe: bool | None = None) -> list[View]:
        """Decode an upload and what of it to show the model (:func:`artattr.locate.locate_views`): one
        :class:`~artattr.locate.View`, or more when cut-outs need the model to confirm them (``maybe``: by
        default :attr:`confirm`).
        Locating needs a larger decode than the model's input (a frame is a few pixels wide at 160 px):
        JPEGs then decode at ``DECODE_SIZE``, once. Pictures under ``MIN_SIDE`` px on a side are refused."""
        img = load_image(image, draft_size=max(DECODE_SIZE, self.size)) if locate else self.load(image)
        if min(img.size) < MIN_SIDE:
            raise ValueError(f"The image is {img.width}×{img.height} px: too small to judge; "
                             f"upload one at least {MIN_SIDE} px on each side.")
        return locate_views(img, self.confirm if maybe is None else maybe) if locate else [View(img, None)]

    def resize(self, img: Image.Image) -> Image.Image:
        size, resample = self.size, RESAMPLE[self.resample]
        if self.resize_mode == "center_crop":
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample, reducing_gap=REDUCING_GAP)
            left, top = (img.width - size) // 2, (img.height - size) // 2
            return img.crop((left, top, left + size, top + size))
        return img.resize((size, size), resample, reducing_gap=REDUCING_GAP)

    def pixels(self, image: ImageInput) -> torch.Tensor:
        """uint8 ``(S, S, 3)``: the model's view of one image before normalising (a quarter of the bytes
        of the float input: what DataLoader workers should pass between processes). ValueError if unusable."""
        import torch

        return torch.from_numpy(self.array(image))

    def array(self, image: ImageInput) -> np.ndarray:
        """:meth:`pixels` as a numpy array, for processes without torch (the CLI's decoders)."""
        return np.asarray(self.resize(self.load(image)), dtype=np.uint8).copy()

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., S, S, 3)`` -> normalised float ``(..., 3, S, S)`` (keeps a channels-last layout)."""
        return self.standardise(pixels.movedim(-1, -3).float().div_(255.0))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """float ``(..., 3, S, S)`` in [0, 1] (e.g. after batched augmentation) -> the model's input."""
        mean, std = _stats(self.mean, self.std, x.device, x.dtype)
        return (x - mean) / std

    def to_tensor(self, image: ImageInput) -> torch.Tensor:
        """(3, S, S) normalised float tensor for one image."""
        return self.normalise(self.pixels(image))


@lru_cache(maxsize=16)
def _stats(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return (torch.tensor(mean, device=device, dtype=dtype).view(3, 1, 1),
            torch.tensor(std, device=device, dtype=dtype).view(3, 1, 1))
