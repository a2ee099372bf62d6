"""Inference: images in, calibrated top-k answers and embeddings out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .hub import resolve
from .images import ImageInput
from .models.heads import ARTWORK_KEY, EMBEDDING_KEYS
from .output import Output, flags, pick, recalibrate
from .preprocess import Preprocess
from .output import top_k as _top_k


class Answers(dict):
    """``{task: [(label, probability), ...]}`` as before, plus ``.flags`` (see :func:`artattr.output.flags`)."""

    flags: dict


class Predictor:
    """A loaded checkpoint ready for inference; cheap to call, safe to share across threads."""

    def __init__(self, model: nn.Module, config: ModelConfig, model_dir: str | os.PathLike | None = None,
                 locate: bool = True):
        # channels_last: depthwise and 1x1 convolutions run 1.2-2x faster on CPU (forward, Grad-CAM,
        # occlusion batches alike); a no-op for models without 4-D weights
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = config
        self.model_dir = Path(model_dir) if model_dir else None
        self.labels = config.tasks
        self.locate = locate  # find the painting in photos of it (artattr.locate) unless run(..., locate=False)
        self.preprocess = Preprocess.from_config(config)

    @property
    def tasks(self) -> list[str]:
        return list(self.config.tasks)

    def resize(self, img: Image.Image) -> Image.Image:
        """The model's view of an image: exactly what training saw (see :mod:`artattr.preprocess`)."""
        return self.preprocess.resize(img)

    def load(self, image: ImageInput) -> Image.Image:
        """Decode an upload (see :func:`artattr.images.load_image`), skipping detail the model never sees:
        a JPEG decodes at the smallest DCT scale still covering the input size (a 1024×768 photo at
        256×192 for 160 px), so decoding costs a fifth of a forward pass instead of two fifths.
        Callers that also show the picture decode their own, larger copy."""
        return self.preprocess.load(image)

    def find(self, image: ImageInput, locate: bool | None = None) -> tuple[Image.Image, np.ndarray | None]:
        """``(picture, corners)``: the upload decoded and the painting cut out of it unless ``locate`` (by
        default the predictor's) is off; see :meth:`artattr.preprocess.Preprocess.find`. A quad the locator is
        unsure of is left to :meth:`run`, which asks the model (:func:`artattr.output.pick`)."""
        return self.preprocess.find(image, self.locate if locate is None else locate)

    def pixels(self, image: ImageInput) -> torch.Tensor:
        """uint8 ``(S, S, 3)``: the model's view of one image before normalising; a quarter of the
        bytes of the float input, which is what DataLoader workers should pass between processes."""
        return torch.from_numpy(np.asarray(self.resize(self.load(image)), dtype=np.uint8).copy())

    def to_tensor(self, image: ImageInput) -> torch.Tensor:
        """(3, S, S) normalised float tensor for one image."""
        return self.normalise(self.pixels(image))

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., S, S, 3)`` pixels of resized images -> the model's normalised ``(..., 3, S, S)``
        input; batches decoded elsewhere (e.g. in DataLoader workers) go through the same definition.
        The result keeps the pixels' channels-last memory layout, the one the model runs fastest on."""
        return self.preprocess.normalise(pixels)

    @torch.inference_mode()
    def forward_batch(self, batch: torch.Tensor) -> list[Output]:
        out = self.model(batch)
        probs = {t: torch.softmax(out[t].float() / self.config.temperature.get(t, 1.0), dim=-1).numpy()
                 for t in self.config.tasks}
        probs = {t: recalibrate(p, self.config.calibration[t]) if t in self.config.calibration else p
                 for t, p in probs.items()}
        emb = {k: out[k].float().numpy() for k in EMBEDDING_KEYS if k in out}
        artwork = torch.sigmoid(out[ARTWORK_KEY].float()).numpy() if ARTWORK_KEY in out else None
        return [
            Output(probs={t: p[i] for t, p in probs.items()},
                   embedding=emb["embedding"][i] if "embedding" in emb else None,
                   sphere=emb["sphere"][i] if "sphere" in emb else None,
                   artwork_score=None if artwork is None else float(artwork[i]))
            for i in range(batch.shape[0])
        ]

    def run(self, image: ImageInput, locate: bool | None = None) -> Output:
        """One upload's answers; ``Output.crop`` says where the painting was found (``locate``: default
        ``self.locate``)."""
        return self.run_batch([image], locate=locate)[0]

    def top_k(self, output: Output, top_k: int = 5) -> Answers:
        answers = Answers(_top_k(output, self.labels, top_k))
        answers.flags = self.flags(output)
        return answers

    def flags(self, output: Output) -> dict:
        """``not_artwork``, ``artwork_score``, ``unknown_artist`` (+ score) and ``uncertain`` tasks."""
        return flags(output, self.config)

    def predict(self, image: ImageInput, top_k: int = 5, locate: bool | None = None) -> Answers:
        """``{task: [(label, probability), ...]}``, most likely first; ``.flags`` says what to trust."""
        return self.top_k(self.run(image, locate), top_k)

    def predict_batch(self, images: Sequence[ImageInput], top_k: int = 5, batch_size: int = 32) -> list[dict]:
        """Top-k answers for many images, batched; an unreadable image raises naming its index."""
        return [self.top_k(o, top_k) for o in self.run_batch(images, batch_size)]

    def run_batch(self, images: Iterable[ImageInput], batch_size: int = 32, locate: bool | None = None) -> list[Output]:
        locate = self.locate if locate is None else locate
        outputs, pending, views = [], [], []
        for i, image in enumerate(images):
            try:
                found = self.preprocess.views(image, locate)
            except ValueError as err:
                raise ValueError(f"image {i} ({image if isinstance(image, (str, Path)) else type(image).__name__}): {err}") from None
            pending += [self.to_tensor(view.picture) for view in found]
            views.append([view._replace(picture=None) for view in found])
            if len(pending) >= batch_size:
                outputs += self.forward_batch(torch.stack(pending))
                pending = []
        if pending:
            outputs += self.forward_batch(torch.stack(pending))
        answers = iter(outputs)
        return [pick([next(answers) for _ in found], found) for found in views]

    def embed(self, image: ImageInput) -> np.ndarray:
        """Unit-norm retrieval embedding of one image (what the similar-works search compares)."""
        out = self.run(image)
        if out.embedding is None:
            raise ValueError(f"Model {self.config.architecture} has no embedding head.")
        return out.embedding


def load(model_id: str | os.PathLike = "default") -> Predictor:
    """Load a checkpoint by id: ``"default"``, a local folder, or ``hf-hub:ORG/NAME[@REV]``."""
    model_dir = resolve(model_id)
    model, config = load_checkpoint(model_dir)
    return Predictor(model, config, model_dir)
