"""Saving and loading trained models with the configuration needed to rebuild them.

A checkpoint is a plain dict (``torch.load(weights_only=True)`` can read it: no
pickled code) holding the task, model and data configs and the state dict; a
model card JSON next to it says how it was trained, for people.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flame_private.config import ConfigError, DataConfig, InitialWeights, ModelConfig, Task, parse_config
from flame_private.models.factory import build_model

log = logging.getLogger(__name__)

FORMAT = "flame-model"
VERSION = 1


def save_model(path: Path, task: Task, model: nn.Module, model_config: ModelConfig, data_config: DataConfig,
               card: dict[str, Any]) -> Path:
    """Write ``path`` (.pt) and ``path.with_suffix('.json')`` (model card), each atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "model_config": model_config.model_dump(mode="json"),
        "data_config": data_config.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_suffix(".pt.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    card_path = path.with_suffix(".json")
    full_card = {"task": task, "format": FORMAT, "version": VERSION,
                 "model_config": blob["model_config"], "data_config": blob["data_config"], **card}
    tmp_card = card_path.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(full_card, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp_card, card_path)
    return path


def load_model(path: Path) -> tuple[Task, nn.Module, ModelConfig, DataConfig]:
    """Rebuild a saved model; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    return model_from_bytes(data, path)


def model_from_bytes(data: bytes, path: Path) -> tuple[Task, nn.Module, ModelConfig, DataConfig]:
    """Rebuild a model from a checkpoint's bytes (read once, so that what was hashed is what loads)."""
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: not a readable model checkpoint ({exc})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a flame-private model checkpoint")
    if blob.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {blob.get('version')!r}")
    try:
        task = blob["task"]
        model_config = parse_config(blob["model_config"], ModelConfig, f"{path}:model_config")
        data_config = parse_config(blob["data_config"], DataConfig, f"{path}:data_config")
        model = build_model(task, model_config)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: a damaged checkpoint ({type(exc).__name__}: {exc})") from None
    model.eval()
    return task, model, model_config, data_config


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, as ``sha256sum`` prints it (what ``InitialWeights.sha256`` pins)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ARCHITECTURE = ("response_channels", "evolution_channels", "norm_groups")
"""Model settings a checkpoint must share with the run: they shape what its weights mean."""
GRID = ("grid", "voxel_mm")
"""Data settings it must share: the features (volumes, intensities) and the image scale its weights read."""


def load_initial_weights(model: nn.Module, task: Task, pinned: InitialWeights, model_config: ModelConfig,
                         data_config: DataConfig) -> nn.Module:
    """Load the pinned public checkpoint into ``model`` (built from the run's model config), or refuse.

    The file must be the one the federation config pins (its SHA-256; the bytes
    hashed are the bytes loaded), a checkpoint of ``task``, made with the run's
    network and grid, and fit the network exactly: a site that started from
    other weights than the rest would add its update to a model nobody else
    has.  Every refusal is a ConfigError naming the file and the config field.
    """
    field = f"initial_weights.{task}"
    path = Path(pinned.path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found ({field}.path of the federation config)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc}; {field}.path of the federation config)") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned.sha256:
        raise ConfigError(f"{path}: SHA-256 {actual} does not match {field}.sha256 {pinned.sha256} of the federation "
                          "config: not the checkpoint the consortium agreed on")
    try:
        ckpt_task, loaded, ckpt_model, ckpt_data = model_from_bytes(data, path)
    except ValueError as exc:
        raise ConfigError(f"{exc} ({field}.path of the federation config)") from None
    if ckpt_task != task:
        raise ConfigError(f"{path}: a {ckpt_task} checkpoint, given as {field} of the federation config")
    differ = [f"model.{k}: {getattr(ckpt_model, k)} in the checkpoint, {getattr(model_config, k)} in the run"
              for k in ARCHITECTURE if getattr(ckpt_model, k) != getattr(model_config, k)]
    differ += [f"data.{k}: {getattr(ckpt_data, k)} in the checkpoint, {getattr(data_config, k)} in the run"
               for k in GRID if getattr(ckpt_data, k) != getattr(data_config, k)]
    if differ:
        raise ConfigError(f"{path}: made for another network or grid than the federation config's ({field}): "
                          + "; ".join(differ))
    try:
        model.load_state_dict(loaded.state_dict())
    except RuntimeError as exc:
        raise ConfigError(f"{path}: does not fit the {task} network of the federation config's model settings "
                          f"({field}): {exc}") from None
    log.info("%s model starts from %s (sha256 %s)", task, path, actual[:16])
    return model
