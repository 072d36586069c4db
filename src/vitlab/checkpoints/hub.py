"""Checkpoints from the Hugging Face Hub: `hf-hub:OWNER/NAME` (timm's spelling) or a bare `OWNER/NAME` that is
not a local path (`timm/vit_base_patch16_224.augreg2_in21k_ft_in1k`, `google/vit-base-patch16-224`).

Only what `load_pretrained` reads is fetched: the JSON configs and the safetensors weights, or the PyTorch
`.bin`/`.pth` weights when a repository has no safetensors (never TF or Flax files). Online, the files go to
`huggingface_hub`'s cache; offline, the cached copy is used; offline without one, the error says what to
download and where it goes.
"""

from __future__ import annotations

import re
from pathlib import Path

from vitlab.errors import VitlabError

PREFIX = "hf-hub:"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SAFE_WEIGHTS = ["*.json", "*.safetensors"]
_PICKLED_WEIGHTS = ["*.json", "*.bin", "*.pth"]


def hub_repo_id(source: str | Path) -> str | None:
    """The Hub repository `source` names, or None when it is a local path (or cannot be a repository id)."""
    text = str(source)
    if text.startswith(PREFIX):
        repo_id = text[len(PREFIX):].strip("/")
        if not _REPO_ID.match(repo_id):
            raise VitlabError(f"{text}: not a Hub repository id; write hf-hub:OWNER/NAME, e.g. hf-hub:google/vit-base-patch16-224")
        return repo_id
    if isinstance(source, Path) or Path(text).expanduser().exists() or not _REPO_ID.match(text):
        return None
    return text


def fetch(repo_id: str) -> Path:
    """The local folder holding `repo_id`'s config and weights: downloaded when online, from the cache offline."""
    try:
        import huggingface_hub
    except ImportError:
        raise VitlabError(f"{repo_id}: reading from the Hub needs huggingface_hub (pip install huggingface_hub)") from None
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        folder = _download(huggingface_hub.snapshot_download, repo_id, local_files_only=False)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise VitlabError(f"{repo_id}: no such model repository on the Hugging Face Hub (or it is private or gated: "
                          "log in with `hf auth login` and accept its terms); check the id") from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        try:
            folder = _download(huggingface_hub.snapshot_download, repo_id, local_files_only=True)
        except (LocalEntryNotFoundError, OSError):
            cache = huggingface_hub.constants.HF_HUB_CACHE
            raise VitlabError(
                f"{repo_id}: the Hugging Face Hub cannot be reached ({type(error).__name__}) and there is no cached copy "
                f"in {cache}; when online run `hf download {repo_id} --include '*.json' '*.safetensors'` (it fills "
                "that cache), or download the repository's files into a folder and pass the folder"
            ) from None
    return folder


def _download(snapshot_download, repo_id: str, local_files_only: bool) -> Path:  # type: ignore[no-untyped-def]
    folder = Path(snapshot_download(repo_id, allow_patterns=_SAFE_WEIGHTS, local_files_only=local_files_only))
    if not any(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(repo_id, allow_patterns=_PICKLED_WEIGHTS, local_files_only=local_files_only))
    return folder
