"""Model ids -> local checkpoint folders, through one function (as open_clip does).

``"default"`` is the checkpoint embedded in the repo, a path is a local folder, and
``hf-hub:ORG/NAME[@REVISION]`` is downloaded once with huggingface_hub and cached.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import CONFIG_FILE, CheckpointError

#: The embedded model: in a checkout (or an editable install) checkpoints/default; a wheel built by
#: ``pip install .`` carries the same folder as the package data ``artattr/default_checkpoint``.
_CHECKOUT_DEFAULT = Path(__file__).resolve().parent.parent / "checkpoints" / "default"
DEFAULT_DIR = _CHECKOUT_DEFAULT if _CHECKOUT_DEFAULT.is_dir() else Path(__file__).resolve().parent / "default_checkpoint"
HF_PREFIX = "hf-hub:"
#: A branch, tag, commit or ``refs/pr/N``: git ref characters only, slash-separated parts that do not
#: start with a dot, no ``..``, bounded. The revision becomes a path in the local Hub cache.
REVISION = re.compile(r"(?!.*\.\.)(?!.*\.lock$)[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAX_REVISION = 128


def parse_hub_id(model_id: str) -> tuple[str, str | None]:
    """``hf-hub:org/name@rev`` -> ("org/name", "rev"); raises on anything that is no repo id or revision."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    usage = "expected 'hf-hub:ORG/NAME' or 'hf-hub:ORG/NAME@REVISION'"
    repo = model_id[len(HF_PREFIX):] if model_id.startswith(HF_PREFIX) else model_id
    repo, _, revision = repo.partition("@")
    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise ValueError(f"{model_id[:200]!r} is not a Hub model id; {usage}.") from None
    if repo.count("/") != 1:
        raise ValueError(f"{model_id[:200]!r} is not a Hub model id; {usage}.")
    if revision and (len(revision) > MAX_REVISION or not REVISION.fullmatch(revision)):
        raise ValueError(f"{model_id[:200]!r}: the revision must be a branch, tag or commit name; {usage}.")
    return repo, (revision or None)


def resolve(model_id: str | os.PathLike) -> Path:
    """Return the local folder holding the checkpoint ``model_id`` names, downloading if needed."""
    text = str(model_id).strip()
    if text == "default":
        return DEFAULT_DIR
    if text.startswith(HF_PREFIX):
        return _download(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    raise ValueError(f"Unknown model {text!r}: use 'default', a checkpoint folder, or 'hf-hub:ORG/NAME[@REVISION]'.")


def _download(model_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = parse_hub_id(model_id)
    try:
        folder = Path(snapshot_download(repo_id=repo, revision=revision, repo_type="model"))
    except GatedRepoError:
        raise ValueError(f"{model_id}: the repository is gated; log in with a token that has access (HF_TOKEN).") from None
    except RepositoryNotFoundError:
        raise ValueError(f"{model_id}: no such model repository on the Hub (or it is private and no token was given).") from None
    except RevisionNotFoundError:
        raise ValueError(f"{model_id}: revision {revision!r} does not exist in {repo}.") from None
    except LocalEntryNotFoundError:
        raise ValueError(f"{model_id}: cannot reach the Hugging Face Hub and the model is not in the local cache (offline?).") from None
    except (HfHubHTTPError, OSError) as err:
        raise ValueError(f"{model_id}: download failed ({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}).") from None
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{model_id}: the repository has no {CONFIG_FILE}; it is not an ArtAttr checkpoint.")
    return folder
