"""Checkpoints of this project's models: a directory with ``config.json`` and ``model.safetensors``.

One format for every model (FCG, VQIG): the config as JSON beside the weights, written atomically
(both files land complete or not at all) and read back strictly (a missing, unexpected or
mis-shaped weight is an error that lists them).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint"]

M = TypeVar("M", bound=nn.Module)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not match its config."""


def save_checkpoint(model: nn.Module, config: Any, path: str | Path, *, kind: str, version: int) -> None:
    """Write ``config.json`` (``kind``, ``version``, the dataclass ``config``) and ``model.safetensors``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": version, "model": kind, "config": asdict(config)}
    tmp = path / "config.json.partial"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors.partial"))
    (path / "model.safetensors.partial").replace(path / "model.safetensors")
    tmp.replace(path / "config.json")


def load_checkpoint(
    cls: type[M], config_cls: type, path: str | Path, *, kind: str, version: int,
    device: str | torch.device = "cpu",
) -> M:  # fmt: skip
    """Rebuild ``cls(config_cls(**config))`` from a checkpoint directory and load its weights strictly."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path / 'config.json'}: {exc}") from exc
    if meta.get("model") != kind or meta.get("format_version") != version:
        raise CheckpointError(
            f"{path}: expected a {kind} checkpoint of format {version}, "
            f"got model={meta.get('model')!r} format={meta.get('format_version')!r}"
        )
    try:
        config = config_cls(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config: {exc}") from exc
    model = cls(config)
    try:
        state = load_file(str(path / "model.safetensors"), device="cpu")
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {path / 'model.safetensors'}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped weights, all listed
        raise CheckpointError(f"{path}: weights do not match the config: {exc}") from exc
    return model.to(device)
