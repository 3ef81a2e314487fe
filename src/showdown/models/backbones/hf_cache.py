"""Weights already in the Hugging Face hub cache, found offline.

Anyone who has run a timm model with pretrained weights has them under
`<cache>/models--timm--<model>.<tag>/snapshots/<rev>/model.safetensors`. huggingface_hub's own lookup
(`try_to_load_from_cache`) resolves `refs/main` to that file without touching the network.
"""
from __future__ import annotations

import os
from pathlib import Path

import timm

# timm's own order: safetensors first, then the pickled checkpoint (read with weights_only=True by files.py).
DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")


def hub_cache_dir() -> Path:
    """$HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub, read now: huggingface_hub's constants are
    fixed when it is imported, and a test or a caller may set the variables later."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    home = os.environ.get("HF_HOME") or Path(xdg) / "huggingface"
    return Path(home).expanduser() / "hub"


def hub_repo(model_name: str) -> tuple[str | None, tuple[str, ...]]:
    """(repo id, files to look for) of timm's pretrained weights for `model_name` (arch or arch.tag)."""
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except (RuntimeError, KeyError, ValueError):  # no pretrained config (showdown's own Keras architectures)
        return None, ()
    if cfg is None or not cfg.hf_hub_id:
        return None, ()
    return cfg.hf_hub_id, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else DEFAULT_FILES


def find_in_hub_cache(model_name: str, tried: list[str]) -> tuple[Path, str] | None:
    """(file, repo id) of `model_name`'s weights in the hub cache, or None with what was tried noted."""
    cache = hub_cache_dir()
    repo_id, filenames = hub_repo(model_name)
    if repo_id is None:
        tried.append(f"Hugging Face cache {cache} (timm has no hub repo for {model_name})")
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ModuleNotFoundError:
        tried.append(f"Hugging Face cache {cache} (huggingface_hub not installed)")
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(found, str):  # else None (not cached) or a marker that the hub said it does not exist
            return Path(found), repo_id
    tried.append(f"Hugging Face cache {cache} (no {repo_id})")
    return None
