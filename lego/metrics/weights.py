"""Where each metric's weights live inside a user's local metric-weights directory.

The directory may follow the release layout of ``bolinlai/LEGO-Metrics`` / the paper's repo
(``egovlp/pretrained/egovlp.pth``, ``metrics/egovlp/pretrained/...``), or simply hold the
original files side by side. Each weight has a canonical file name (the original source's) and
is found at any of a few standard places under the directory, or anywhere below it. CLIP and the
BLIP captioners are accepted in two forms: a transformers model directory or the paper's original
checkpoint file (converted on load); the directory is preferred when both are present.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lego.errors import UserError
from lego.hub import BLIP_BASE, BLIP_LARGE, CLIP_VIT_L14, DISTILBERT, LEGO_METRICS

#: Folders, relative to the weights directory, searched before a recursive search.
#: Hugging Face repository of the paper's metric weights.
METRICS_REPO = LEGO_METRICS

SEARCH_FOLDERS = (
    "",
    "egovlp",
    "egovlp/pretrained",
    "metrics/egovlp/pretrained",
    "blip",
    "blip/pretrained",
    "metrics/blip/pretrained",
    "clip",
    "metrics",
    "fid",
    "lpips",
    "hub/checkpoints",
    "checkpoints",
)


@dataclass(frozen=True)
class WeightSpec:
    """One weight file or model directory a metric needs.

    Attributes:
        key: Short identifier (``egovlp_ego4d``, ``inception`` ...).
        name: Canonical file or directory name, as published by its source.
        is_dir: A model directory (``from_pretrained`` layout, holding ``config.json``).
        source: Where to obtain it.
        aliases: Other accepted names.
        hub_repo: Hugging Face repository to download it from (a model repo for directories;
            for files, a repo searched for a file of this name).
        url: Direct download URL of a file.
        original: For a model directory: the original checkpoint file accepted instead of it
            (the paper's release; converted on load by :mod:`lego.metrics.convert`).
    """

    key: str
    name: str
    is_dir: bool
    source: str
    aliases: tuple[str, ...] = ()
    hub_repo: str | None = None
    url: str | None = None
    original: str | None = None


WEIGHTS: dict[str, WeightSpec] = {
    spec.key: spec
    for spec in (
        WeightSpec("egovlp_ego4d", "egovlp.pth", False,
                   "EgoVLP_PT_BEST (showlab/EgoVLP); HF bolinlai/LEGO-Metrics",
                   hub_repo=METRICS_REPO),
        WeightSpec("egovlp_epic", "epic_mir_plus.pth", False,
                   "EgoVLP_FT_EPIC+ (showlab/EgoVLP); HF bolinlai/LEGO-Metrics",
                   hub_repo=METRICS_REPO),
        WeightSpec("distilbert", "distilbert-base-uncased", True,
                   "HF distilbert-base-uncased (tokenizer + config for the EgoVLP text branch)",
                   ("models--distilbert-base-uncased",), hub_repo=DISTILBERT),
        WeightSpec("clip", "clip-vit-large-patch14", True,
                   "HF openai/clip-vit-large-patch14 (transformers layout), or OpenAI clip's "
                   "ViT-L-14.pt",
                   ("models--openai--clip-vit-large-patch14",),
                   hub_repo=CLIP_VIT_L14, original="ViT-L-14.pt"),
        WeightSpec("inception", "pt_inception-2015-12-05-6726825d.pth", False,
                   "pytorch-fid release (mseitzer/pytorch-fid)",
                   url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth"),
        WeightSpec("alex", "alexnet-owt-7be5be79.pth", False, "torchvision ImageNet weights",
                   url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
        WeightSpec("vgg", "vgg16-397923af.pth", False, "torchvision ImageNet weights",
                   url="https://download.pytorch.org/models/vgg16-397923af.pth"),
        WeightSpec("squeeze", "squeezenet1_1-b8a52dc0.pth", False, "torchvision ImageNet weights",
                   url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
        WeightSpec("blip_base", "blip-image-captioning-base", True,
                   "HF Salesforce/blip-image-captioning-base (transformers layout), or "
                   "model_base_caption_capfilt_large.pth of HF bolinlai/LEGO-Metrics",
                   ("models--Salesforce--blip-image-captioning-base",),
                   hub_repo=BLIP_BASE,
                   original="model_base_caption_capfilt_large.pth"),
        WeightSpec("blip_large", "blip-image-captioning-large", True,
                   "HF Salesforce/blip-image-captioning-large (transformers layout), or "
                   "model_large_caption.pth of HF bolinlai/LEGO-Metrics",
                   ("models--Salesforce--blip-image-captioning-large",),
                   hub_repo=BLIP_LARGE,
                   original="model_large_caption.pth"),
    )
}


class MissingWeightsError(UserError, FileNotFoundError):
    """A metric's weights are not in the weights directory; the message says what to put where."""


def _model_dir(path: Path) -> Path | None:
    """Return ``path`` if it is a model directory, or its HF-cache snapshot holding config.json."""
    if (path / "config.json").is_file():
        return path
    for snapshot in sorted(path.glob("models--*/snapshots/*"), reverse=True) + sorted(
        path.glob("snapshots/*"), reverse=True
    ):
        if (snapshot / "config.json").is_file():
            return snapshot
    return None


def _candidates(root: Path, names: tuple[str, ...]) -> Iterator[Path]:
    """The standard places first, then anywhere below ``root``."""
    for folder in SEARCH_FOLDERS:
        for name in names:
            yield root / folder / name
    for name in names:
        yield from sorted(root.rglob(name))


def _find(root: Path, names: tuple[str, ...], is_dir: bool) -> Path | None:
    for candidate in _candidates(root, names):
        if is_dir and candidate.is_dir():
            found = _model_dir(candidate)
            if found is not None:
                return found
        elif not is_dir and candidate.is_file():
            return candidate
    return None


def find_weight(weights_dir: Path | None, key: str) -> Path | None:
    """Find a weight file or model directory inside ``weights_dir``.

    A model directory is looked for first; failing that, the spec's original checkpoint file.

    Args:
        weights_dir: The user's metric-weights directory (None: nothing is found).
        key: A key of :data:`WEIGHTS`.

    Returns:
        The path, or None when absent.
    """
    if weights_dir is None:
        return None
    root = Path(weights_dir)
    if not root.is_dir():
        return None
    spec = WEIGHTS[key]
    found = _find(root, (spec.name, *spec.aliases), spec.is_dir)
    if found is None and spec.original:
        found = _find(root, (spec.original,), False)
    return found


def weight_form(path: Path) -> str:
    """``"transformers dir"``, ``"original file"`` (a model's original checkpoint) or ``"file"``."""
    if path.is_dir():
        return "transformers dir"
    if any(spec.original == path.name for spec in WEIGHTS.values()):
        return "original file"
    return "file"


def missing_message(weights_dir: Path | None, key: str) -> str:
    """What to put where for an absent weight (both accepted forms where there are two)."""
    spec = WEIGHTS[key]
    kind = "model directory" if spec.is_dir else "file"
    where = weights_dir if weights_dir is not None else "<no --weights directory given>"
    message = f"missing {kind} {spec.name!r}: put it at {where}/{spec.name}"
    if spec.original:
        message += f" or the original file at {where}/{spec.original}"
    return message + f" (source: {spec.url or spec.source})"


def require_weight(weights_dir: Path | None, key: str) -> Path:
    """Like :func:`find_weight` but raise a :class:`MissingWeightsError` saying what is missing.

    Args:
        weights_dir: The user's metric-weights directory.
        key: A key of :data:`WEIGHTS`.

    Returns:
        The path.

    Raises:
        MissingWeightsError: If it is absent.
    """
    found = find_weight(weights_dir, key)
    if found is None:
        raise MissingWeightsError(missing_message(weights_dir, key))
    return found
