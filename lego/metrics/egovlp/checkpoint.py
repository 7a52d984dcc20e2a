"""Loading the official EgoVLP checkpoints without executing code from them.

The released files (``egovlp.pth``, ``epic_mir_plus.pth``) are full training pickles: next to
``state_dict`` they hold a pickled ``parse_config.ConfigParser`` (and optimizer state), so plain
``torch.load`` refuses them and ``weights_only=False`` would run arbitrary code. Here they are
read with a restricted unpickler: tensors, storages, dtypes and plain containers resolve to the
real objects; every other global becomes an inert placeholder class, so nothing from the file is
ever called.
"""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

from lego.errors import UserError

#: ``(module, name)`` globals resolved to the real object. Everything else becomes a placeholder.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
}


class Placeholder:
    """Inert stand-in for a class the checkpoint names but that must not be imported or run.

    It accepts any constructor arguments and pickled state and keeps them for inspection.
    """

    pickled_name = "<unknown>"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:  # noqa: D102
        obj = super().__new__(cls)
        obj.args = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:  # noqa: D102
        return type(self)(*args)

    def __repr__(self) -> str:
        return f"<placeholder for {self.pickled_name}>"


def _resolve(module: str, name: str) -> Any:
    allowed = _ALLOWED.get((module, name))
    if allowed is not None:
        return allowed
    if module == "torch":
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            return value
        if isinstance(value, type) and name.endswith("Storage"):
            return value
    return type(f"Placeholder_{module}_{name}".replace(".", "_"), (Placeholder,),
                {"pickled_name": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only resolves tensor machinery; other globals become placeholders."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        return _resolve(module, name)


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


#: A ``pickle_module`` for ``torch.load`` built on :class:`RestrictedUnpickler`.
restricted_pickle = types.SimpleNamespace(
    __name__="lego_restricted_pickle",
    Unpickler=RestrictedUnpickler,
    load=_restricted_load,
    UnpicklingError=pickle.UnpicklingError,
)


class CheckpointError(UserError, RuntimeError):
    """An EgoVLP checkpoint cannot be read or does not fit the model."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read an EgoVLP training checkpoint with the restricted unpickler.

    Args:
        path: The ``.pth`` file.

    Returns:
        The top-level dictionary (``state_dict``, and in official files ``config``, ``epoch``...).

    Raises:
        CheckpointError: If the file is missing, unreadable, or has no ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: EgoVLP checkpoint not found")
    try:
        # weights_only=False is required to pass a custom pickle_module; that module resolves
        # only tensor globals and replaces every other class by an inert placeholder.
        data = torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=restricted_pickle)
    except Exception as err:  # noqa: BLE001 - any decoding failure names the file
        raise CheckpointError(f"{path}: cannot read EgoVLP checkpoint ({err})") from err
    if isinstance(data, dict) and "state_dict" not in data and all(
        isinstance(v, Tensor) for v in data.values()
    ):
        data = {"state_dict": data}
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' entry")
    return data


def fix_data_parallel_prefix(
    state_dict: dict[str, Tensor], model_keys: list[str]
) -> dict[str, Tensor]:
    """Add or strip the ``module.`` prefix, deciding by the first key of each dict (as EgoVLP).

    Args:
        state_dict: The checkpoint's weights.
        model_keys: The model's state-dict keys, in order.

    Returns:
        The weights with keys in the model's convention.
    """
    if not state_dict or not model_keys:
        return dict(state_dict)
    ckpt_prefixed = next(iter(state_dict)).startswith("module.")
    model_prefixed = model_keys[0].startswith("module.")
    if ckpt_prefixed and not model_prefixed:
        return {k[len("module."):]: v for k, v in state_dict.items()}
    if model_prefixed and not ckpt_prefixed:
        return {"module." + k: v for k, v in state_dict.items()}
    return dict(state_dict)


def fit_temporal_embed(state_dict: dict[str, Tensor], num_frames: int) -> dict[str, Tensor]:
    """Truncate or zero-pad ``video_model.temporal_embed`` to ``num_frames`` rows.

    Args:
        state_dict: Weights with unprefixed keys.
        num_frames: The model's number of frames.

    Returns:
        The weights with a ``1 x num_frames x D`` temporal embedding.
    """
    key = "video_model.temporal_embed"
    embed = state_dict.get(key)
    if embed is None or embed.shape[1] == num_frames:
        return state_dict
    out = dict(state_dict)
    if embed.shape[1] > num_frames:
        out[key] = embed[:, :num_frames].clone()
    else:
        padded = embed.new_zeros(embed.shape[0], num_frames, embed.shape[2])
        padded[:, : embed.shape[1]] = embed
        out[key] = padded
    return out


def load_egovlp_weights(
    model: nn.Module, path: Path, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load an official EgoVLP checkpoint into :class:`~lego.metrics.egovlp.model.EgoVLP`, strictly.

    Args:
        model: The model; its ``config.num_frames`` decides the temporal embedding size.
        path: The checkpoint file (``egovlp.pth``, ``epic_mir_plus.pth`` or a plain state dict).
        data: The file's contents if already read with :func:`read_checkpoint`.

    Returns:
        The checkpoint's other top-level entries (``config`` as a placeholder, ``epoch``...).

    Raises:
        CheckpointError: If the file cannot be read, or any key is missing or unexpected, or a
            shape differs.
    """
    data = read_checkpoint(path) if data is None else data
    keys = list(model.state_dict())
    state = fix_data_parallel_prefix(data["state_dict"], keys)
    num_frames = model.video_model.temporal_embed.shape[1]
    state = fit_temporal_embed(state, num_frames)
    own = model.state_dict()
    missing = [k for k in keys if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in keys
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: checkpoint does not fit the EgoVLP model "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {wrong[:5]})"
        )
    model.load_state_dict(state, strict=True)
    return {k: v for k, v in data.items() if k != "state_dict"}
