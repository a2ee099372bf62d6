"""``python -m train push DIR ORG/NAME``: publish a checkpoint folder as a Hub model repo.

After this, ``artattr.load("hf-hub:ORG/NAME")`` works anywhere. The token comes from where
``huggingface_hub`` always looks (``HF_TOKEN``, ``hf auth login``); every failure a user can fix
(no token, offline, a name that is not theirs) becomes one sentence instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from artattr.checkpoint import read_config
from artattr.hub import parse_hub_id


class PushError(RuntimeError):
    """Publishing failed for a reason the user can act on; the message says which."""


def push(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit id."""
    import httpx2
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    config = read_config(folder)  # refuse to publish something artattr.load cannot read
    repo, revision = parse_hub_id(repo_id)
    if revision:
        raise ValueError(f"{repo_id!r}: push to a repository, not a revision (drop '@{revision}').")
    if not get_token():
        raise PushError("No Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access).")
    api = HfApi()  # built here, not at import, so HF_ENDPOINT / a test server set before the call is used
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                                 commit_message=message or f"Upload ArtAttr {config.architecture} checkpoint",
                                 ignore_patterns=[".*"])
    except httpx2.TransportError as err:
        raise PushError(f"Cannot reach the Hub at {api.endpoint} ({err.__class__.__name__}); check the network "
                        "or HF_ENDPOINT.") from None
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401:
            raise PushError("The Hub rejected the token (401): it is invalid or expired; set HF_TOKEN or run "
                            "`hf auth login` again.") from None
        if status in (403, 409):
            raise PushError(f"Not allowed to write to {repo} ({status}): the name is taken by someone else or the "
                            "token has no write access to that user/organisation; choose another ORG/NAME.") from None
        raise PushError(f"Upload to {repo} failed: {str(err).strip().splitlines()[0]}") from None
    return info.oid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train push", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="checkpoint folder (config.json + model.safetensors)")
    parser.add_argument("repo", help="ORG/NAME on the Hub")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--message", help="commit message")
    args = parser.parse_args(argv)
    try:
        oid = push(args.folder, args.repo, private=args.private, message=args.message)
    except (PushError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.folder} to hf-hub:{args.repo}@{oid}")
    return 0
