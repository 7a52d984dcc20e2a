"""Resumable backbone training: the whole training state in one file, written atomically.

A backbone takes hours on a CPU. Every ``checkpoint_every`` steps the builder saves its state
(weights, EMA, optimiser, step, random generators, recipe) to ``<out>.partial/state.pt``; a
builder started again with the same recipe continues from there and ends with the same weights
as an uninterrupted run. The state is a plain tensor dictionary, loaded with
``torch.load(weights_only=True)`` (no code-executing unpickling).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch


def partial_dir(out_dir: Path) -> Path:
    """Where an unfinished build of ``out_dir`` keeps its state (``<out>.partial``)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".partial")


def save_state(
    out_dir: Path, step: int, recipe: dict[str, Any], parts: dict[str, Any],
    rng: random.Random, extra: dict[str, Any] | None = None,
) -> Path:
    """Write the training state of a build atomically.

    Args:
        out_dir: The backbone folder being built.
        step: Steps done.
        recipe: The recipe (a resumed build must have the same).
        parts: Objects with ``state_dict()`` (modules, EMA models, optimiser), by name.
        rng: The build's Python random generator.
        extra: More plain values to keep (e.g. loss history).

    Returns:
        The state file.
    """
    folder = partial_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step,
        "recipe": _plain(recipe),
        "parts": {name: part.state_dict() for name, part in parts.items()},
        "torch_rng": torch.get_rng_state(),
        "python_rng": _plain(rng.getstate()),
        "extra": _plain(extra or {}),
    }
    path = folder / "state.pt"
    tmp = folder / ".state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_state(
    out_dir: Path, recipe: dict[str, Any], parts: dict[str, Any], rng: random.Random,
) -> tuple[int, dict[str, Any]] | None:
    """Restore a saved state into ``parts`` and ``rng`` if one exists for this recipe.

    Args:
        out_dir: The backbone folder being built.
        recipe: The recipe of this run.
        parts: The objects to restore, by name (as saved).
        rng: The Python random generator to restore.

    Returns:
        ``(step, extra)`` of the restored state, or ``None`` when there is none.

    Raises:
        ValueError: If the saved state was made with another recipe (the message says where).
    """
    path = partial_dir(out_dir) / "state.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["recipe"] != _plain(recipe):
        raise ValueError(
            f"{path}: an unfinished build with another recipe; delete {path.parent} to start "
            "over, or rerun with the same settings to resume it"
        )
    for name, part in parts.items():
        part.load_state_dict(state["parts"][name])
    torch.set_rng_state(state["torch_rng"])
    rng.setstate(_tuples(state["python_rng"]))
    return int(state["step"]), dict(state["extra"])


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what survives a save and load unchanged)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value
