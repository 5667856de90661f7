"""Hugging Face hub ids ("Qwen/Qwen2.5-0.5B-Instruct") -> a local snapshot directory.

The local cache is tried first; a download (with huggingface_hub's progress bars)
happens only when the cache lacks the model and HF_HUB_OFFLINE is not set.  The
environment is read at call time, so HF_HOME / HF_HUB_CACHE set after import count.
"""
from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(model: str) -> bool:
    return bool(HUB_ID.match(model)) and not model.startswith((".", "/")) and not os.path.exists(model)


def hub_cache_dir() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve(repo_id: str, revision: str | None = None) -> str:
    """The local directory holding ``repo_id`` (downloading it if allowed and needed)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise FileNotFoundError(f"{repo_id!r} is not a local path, and resolving it as a Hugging Face hub id "
                                "needs huggingface_hub (pip install huggingface_hub)") from e
    cache = hub_cache_dir()
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True)
    except Exception as cached_err:  # noqa: BLE001 - not in the cache: maybe download
        if _offline():
            raise FileNotFoundError(f"{repo_id!r} is not a local path and not in the hub cache {cache!r} "
                                    "(HF_HUB_OFFLINE is set, so nothing is downloaded)") from cached_err
    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache)
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one clear message
        raise FileNotFoundError(f"{repo_id!r} is neither a local path nor a reachable Hugging Face hub repo "
                                f"(cache {cache!r}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                                ) from e
