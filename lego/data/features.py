"""VLM feature cache: the describe stage's output, read back as data by the diffusion stage.

A cache holds, for each sample of one split, the VLM image embedding, the text embedding (the
hidden state of each generated token) and the enriched description. Layout of a cache folder::

    <cache>/manifest.json            what produced it: model, template, generation, dims, dtype
    <cache>/projector.safetensors    folded linear projector (only when image_storage = vision)
    <cache>/shards/*.safetensors     per-rank shards: "<sample_id>/image", "<sample_id>/text"
    <cache>/index.json               sample id -> shard (rebuilt from the shards when stale)
    <cache>/descriptions.json        sample id -> enriched description
    <cache>/.lock                    held (flock) by the describe run writing the cache

Size: the paper's layout stores ``256 x 5120`` projected image tokens plus ``77 x 5120`` text
rows in float16 per sample (~3.4 MB). This cache stores the image as the vision features before
the projector when the projector is linear (``256 x 1024``; the projector is stored once and
applied on read) and only the valid text rows (the padding is rebuilt on read). What the reader
returns equals the paper's arrays up to float16 rounding of the vision features.

The paper's own per-sample ``.npy`` layout is read by :class:`OfficialNpyFeatures`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from lego.data.io import DataFormatError, load_json, publish, safe_join
from lego.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX = "index.json"
DESCRIPTIONS = "descriptions.json"
PROJECTOR = "projector.safetensors"
SHARDS = "shards"
LOCK = ".lock"
FORMAT = "lego-vlm-features"
FORMAT_VERSION = 1
#: Rows of the text embedding (CLIP's context length, as in the paper).
TEXT_LENGTH = 77
#: Manifest keys that must agree for a run to add samples to an existing cache.
IDENTITY_KEYS = ("model", "template", "generation", "image_storage", "dims", "dtype")

ImageStorage = Literal["vision", "projected"]


class CacheBusyError(UserError, RuntimeError):
    """Another describe run holds the feature cache's writer lock."""

FeatureLayout = Literal["cache", "official_npy"]


@dataclass
class DescribedSamples:
    """What the VLM ``predict_step`` returns for one batch (consumed by the description writer).

    Attributes:
        sample_ids: ``"<clip_id>/<action_id>"`` of each sample.
        image_0: Relative input frame path of each sample.
        descriptions: Generated enriched descriptions.
        num_tokens: Generated tokens per sample, EOS included.
        image: Per-sample image features, ``B x N_img x Dv`` (vision features before a linear
            projector) or ``B x N_img x D`` (projector output), see ``image_storage``.
        text: Text embeddings, ``B x 77 x D``, zero beyond ``num_tokens``.
        text_mask: ``B x 77`` bool, True on valid rows.
        image_storage: ``vision`` or ``projected``.
    """

    sample_ids: list[str]
    image_0: list[str]
    descriptions: list[str]
    num_tokens: list[int]
    image: Tensor
    text: Tensor
    text_mask: Tensor
    image_storage: ImageStorage

    def __len__(self) -> int:
        return len(self.sample_ids)


def tensor_sha256(*tensors: Tensor) -> str:
    """Hash tensors' float32 bytes (identifies projector weights in the manifest)."""
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_manifest(existing: dict[str, Any], new: dict[str, Any], where: Path) -> None:
    """Refuse to mix samples produced by different models or settings in one cache.

    Args:
        existing: The manifest already in the cache.
        new: The manifest of the current run.
        where: The cache folder, for the error message.

    Raises:
        DataFormatError: Naming the first key that differs.
    """
    for key in IDENTITY_KEYS:
        if existing.get(key) != new.get(key):
            raise DataFormatError(
                f"{where}: the feature cache was written by a different model or settings: "
                f"{key!r} is {existing.get(key)!r} in the cache but {new.get(key)!r} in this run "
                "(use another cache folder, or delete this one to start over)"
            )


def check_shard(path: Path) -> None:
    """Check that a shard is complete: its header parses and its data fills the file exactly.

    Reads the header only (a few KB), so every shard of a cache can be checked at setup; a
    shard cut short by a full disk or an interrupted copy is named here instead of failing
    with a bare ``SafetensorError`` in the middle of an epoch.

    Args:
        path: The shard file.

    Raises:
        DataFormatError: Naming the shard and what is wrong with it.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes: shorter than a safetensors header")
            length = int.from_bytes(head, "little")
            if length > size - 8:
                raise ValueError(f"its header claims {length} bytes but the file has {size}")
            header = json.loads(handle.read(length))
        end = max((entry["data_offsets"][1] for key, entry in header.items()
                   if key != "__metadata__"), default=0)
        if 8 + length + end != size:
            raise ValueError(f"its tensors end at byte {8 + length + end} but the file has {size}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
        raise DataFormatError(
            f"{path}: damaged feature-cache shard ({err}); delete it and run the describe stage "
            "again (it redoes only the missing samples)"
        ) from err


def _shard_samples(path: Path) -> list[dict[str, Any]]:
    check_shard(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        samples = json.loads(meta["samples"])
    except (KeyError, json.JSONDecodeError) as err:
        raise DataFormatError(f"{path}: shard without a valid 'samples' metadata entry") from err
    return list(samples)


def scan_shards(cache_dir: Path, set_aside_damaged: bool = False) -> dict[str, dict[str, Any]]:
    """Read every shard's header: sample id -> ``{shard, image_0, description, num_tokens}``.

    A sample present in several shards keeps its first shard in name order.

    Args:
        cache_dir: The cache folder.
        set_aside_damaged: Rename a damaged shard to ``<name>.damaged`` (with a warning) and go
            on without its samples, so a resumed describe run writes them again; otherwise a
            damaged shard is an error.

    Returns:
        The entries.

    Raises:
        DataFormatError: If a shard is damaged and ``set_aside_damaged`` is off.
    """
    entries: dict[str, dict[str, Any]] = {}
    shard_dir = Path(cache_dir) / SHARDS
    if not shard_dir.is_dir():
        return entries
    for shard in sorted(shard_dir.glob("*.safetensors")):
        try:
            samples = _shard_samples(shard)
        except DataFormatError as err:
            if not set_aside_damaged:
                raise
            with contextlib.suppress(FileNotFoundError):  # another rank set it aside first
                os.replace(shard, shard.with_name(shard.name + ".damaged"))
            log.warning("%s; set aside as %s.damaged, its samples will be described again",
                        err, shard.name)
            continue
        for sample in samples:
            entries.setdefault(sample["id"], {**sample, "shard": shard.name})
    return entries


class FeatureCacheWriter:
    """Writes one rank's samples into a feature cache as safetensors shards.

    Shards are written atomically (temporary file, then rename), so a killed job leaves only
    complete shards and a rerun skips the samples they hold.

    Args:
        cache_dir: The cache folder (created).
        rank: This process's global rank (names its shards).
        shard_size: Samples buffered per shard.
    """

    def __init__(self, cache_dir: Path, rank: int = 0, shard_size: int = 256) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.cache_dir = Path(cache_dir)
        self.rank = rank
        self.shard_size = shard_size
        self.run_token = uuid.uuid4().hex[:8]
        self.sequence = 0
        self.buffer: dict[str, Tensor] = {}
        self.buffer_samples: list[dict[str, Any]] = []
        self.written = 0
        self._lock: Any = None

    def manifest(self) -> dict[str, Any] | None:
        """The cache's manifest, or ``None`` for a new cache."""
        path = self.cache_dir / MANIFEST
        return load_json(path) if path.exists() else None

    def prepare(
        self, manifest: dict[str, Any], projector: tuple[Tensor, Tensor] | None, write: bool
    ) -> None:
        """Check the run against an existing cache, or create the cache.

        Args:
            manifest: The run's manifest.
            projector: The folded projector, stored once when the image is kept before it.
            write: Write the manifest and projector (rank zero only).

        Raises:
            DataFormatError: If the cache was written by a different model or settings.
        """
        existing = self.manifest()
        if existing is not None:
            check_manifest(existing, manifest, self.cache_dir)
            return
        if not write:
            return
        (self.cache_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        if projector is not None:
            weight, bias = projector
            tmp = self.cache_dir / f".{PROJECTOR}.tmp"
            save_file(
                {"weight": weight.float().contiguous(), "bias": bias.float().contiguous()}, tmp
            )
            publish(tmp, self.cache_dir / PROJECTOR)
        _write_json(self.cache_dir / MANIFEST, manifest)

    def completed(self) -> set[str]:
        """Ids of the samples already in the cache's complete shards (damaged ones set aside)."""
        return set(scan_shards(self.cache_dir, set_aside_damaged=True))

    def lock(self) -> None:
        """Take the cache's writer lock (one describe run per cache at a time).

        The lock is an ``flock`` on ``<cache>/.lock``, released by :meth:`unlock` or by the
        system when the process ends, so a killed run never leaves a stale lock.

        Raises:
            CacheBusyError: If another process holds the lock.
        """
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / LOCK
        handle = open(path, "a+")  # noqa: SIM115 - held open until unlock()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise CacheBusyError(
                f"{self.cache_dir}: another describe run ({owner}) is writing this feature "
                "cache; wait for it to finish (a rerun then skips what it wrote)"
            ) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        """Release the writer lock taken by :meth:`lock` (no-op when not held)."""
        handle, self._lock = self._lock, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def add(self, out: DescribedSamples) -> None:
        """Buffer a batch of samples; write a shard when the buffer is full.

        Args:
            out: The outputs of one predict step.
        """
        for i, sid in enumerate(out.sample_ids):
            n = max(1, min(int(out.num_tokens[i]), out.text.shape[1]))
            self.buffer[f"{sid}/image"] = (
                out.image[i].detach().to("cpu", torch.float16).contiguous()
            )
            self.buffer[f"{sid}/text"] = (
                out.text[i, :n].detach().to("cpu", torch.float16).contiguous()
            )
            self.buffer_samples.append(
                {
                    "id": sid,
                    "image_0": out.image_0[i],
                    "description": out.descriptions[i],
                    "num_tokens": int(out.num_tokens[i]),
                }
            )
            if len(self.buffer_samples) >= self.shard_size:
                self.flush()

    def flush(self) -> Path | None:
        """Write the buffered samples as one shard.

        Returns:
            The shard written, or ``None`` when the buffer was empty.
        """
        if not self.buffer_samples:
            return None
        shard_dir = self.cache_dir / SHARDS
        shard_dir.mkdir(parents=True, exist_ok=True)
        name = f"rank{self.rank:03d}-{self.run_token}-{self.sequence:05d}.safetensors"
        tmp = shard_dir / f".{name}.tmp"
        save_file(self.buffer, tmp, metadata={"samples": json.dumps(self.buffer_samples)})
        publish(tmp, shard_dir / name)
        self.written += len(self.buffer_samples)
        self.sequence += 1
        self.buffer, self.buffer_samples = {}, []
        return shard_dir / name


def finalize_cache(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Merge the shards' headers into ``index.json`` and ``descriptions.json``.

    Args:
        cache_dir: The cache folder.

    Returns:
        The merged entries (sample id -> shard, image_0, description, num_tokens).
    """
    cache_dir = Path(cache_dir)
    entries = scan_shards(cache_dir)
    shards = sorted(p.name for p in (cache_dir / SHARDS).glob("*.safetensors"))
    _write_json(
        cache_dir / INDEX,
        {"shards": shards, "samples": {sid: e["shard"] for sid, e in entries.items()}},
    )
    _write_json(cache_dir / DESCRIPTIONS, {sid: e["description"] for sid, e in entries.items()})
    return entries


def write_enriched_records(
    records_file: Path, out_file: Path, descriptions: dict[str, str], key: str
) -> int:
    """Copy a records JSON, adding each sample's description under ``key``.

    Args:
        records_file: The ``{clip: {action: record}}`` file the samples were read from.
        out_file: The copy to write (its folder is created).
        descriptions: Sample id -> description.
        key: Record field for the description (``llava_forecast_finetune`` in the paper).

    Returns:
        Number of records that received a description.

    Raises:
        DataFormatError: If the records file is malformed.
    """
    data = load_json(Path(records_file))
    if not isinstance(data, dict):
        raise DataFormatError(
            f"{records_file}: expected a JSON object {{clip: {{action: record}}}}"
        )
    count = 0
    for clip_id, actions in data.items():
        if not isinstance(actions, dict):
            raise DataFormatError(f"{records_file}: clip {clip_id!r} is not an object")
        for action_id, record in actions.items():
            sid = f"{clip_id}/{action_id}"
            if sid in descriptions and isinstance(record, dict):
                record[key] = descriptions[sid]
                count += 1
    _write_json(Path(out_file), data)
    return count


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def pad_text(text: Tensor, length: int = TEXT_LENGTH) -> tuple[Tensor, Tensor]:
    """Truncate or zero-pad ``N x D`` text rows to ``length`` rows, with the validity mask."""
    n = min(text.shape[0], length)
    out = torch.zeros(length, text.shape[1], dtype=torch.float32)
    out[:n] = text[:n].float()
    mask = torch.zeros(length, dtype=torch.bool)
    mask[:n] = True
    return out, mask


class FeatureCache:
    """Reads a feature cache (implements the DataModule's ``FeatureReader`` seam).

    Args:
        cache_dir: The cache folder of one split.
        embed_dim: Expected embedding dimension D (the diffusion model's VLM width), if known.
        image_tokens: Expected number of image tokens, if known.

    Raises:
        DataFormatError: If the folder is not a cache or its dims differ from the expected ones.
    """

    def __init__(
        self, cache_dir: Path, embed_dim: int | None = None, image_tokens: int | None = None
    ) -> None:
        self.cache_dir = Path(cache_dir)
        path = self.cache_dir / MANIFEST
        if not path.is_file():
            raise DataFormatError(
                f"{self.cache_dir}: not a feature cache (no {MANIFEST}); run the describe stage "
                "for this split first"
            )
        self.manifest = load_json(path)
        if self.manifest.get("format") != FORMAT:
            raise DataFormatError(f"{path}: not a {FORMAT} manifest")
        dims = self.manifest.get("dims", {})
        for name, expected in (("embed_dim", embed_dim), ("image_tokens", image_tokens)):
            if expected is not None and dims.get(name) != expected:
                raise DataFormatError(
                    f"{path}: the cache has {name}={dims.get(name)} but {expected} is expected "
                    f"(cache written by {self.manifest.get('model', {}).get('name_or_path')!r})"
                )
        self.embed_dim = int(dims["embed_dim"])
        self.image_tokens = int(dims["image_tokens"])
        self.text_length = int(dims.get("text_length", TEXT_LENGTH))
        self.image_storage: ImageStorage = self.manifest.get("image_storage", "projected")
        self.projector: tuple[Tensor, Tensor] | None = None
        if self.image_storage == "vision":
            with safe_open(str(self.cache_dir / PROJECTOR), framework="pt") as f:
                self.projector = (f.get_tensor("weight"), f.get_tensor("bias"))
        self.entries = self._load_index()
        self._handles: dict[str, Any] = {}

    def check(self, sample_id: str, image_0: str, where: str) -> None:
        """Refuse, at setup, a record whose sample the cache does not hold.

        Args:
            sample_id: ``"<clip_id>/<action_id>"``.
            image_0: The input frame path (unused; the cache is keyed by sample id).
            where: The record, for the message.

        Raises:
            DataFormatError: If the sample is not in the cache.
        """
        if sample_id not in self.entries:
            raise DataFormatError(
                f"{where}: no features in the cache {self.cache_dir} (describe this split "
                "again: finished samples are skipped)"
            )

    def _load_index(self) -> dict[str, str]:
        index_path = self.cache_dir / INDEX
        shards = sorted(p.name for p in (self.cache_dir / SHARDS).glob("*.safetensors"))
        if index_path.is_file():
            index = load_json(index_path)
            if index.get("shards") == shards:
                for shard in shards:  # the index skips the headers: check each shard here
                    check_shard(self.cache_dir / SHARDS / shard)
                return dict(index["samples"])
        return {sid: e["shard"] for sid, e in scan_shards(self.cache_dir).items()}  # checks

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = {}  # file handles do not cross into DataLoader workers
        return state

    def _handle(self, shard: str) -> Any:
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.cache_dir / SHARDS / shard), framework="pt")
        return self._handles[shard]

    def read(self, sample_id: str, image_0: str = "") -> dict[str, Tensor]:
        """Return ``{"vlm_image": N x D, "vlm_text": 77 x D, "vlm_text_mask": 77}`` (float32).

        Args:
            sample_id: ``"<clip_id>/<action_id>"``.
            image_0: The input frame path (unused; the cache is keyed by sample id).

        Returns:
            The embeddings.

        Raises:
            DataFormatError: If the sample is not in the cache.
        """
        shard = self.entries.get(sample_id)
        if shard is None:
            raise DataFormatError(
                f"{self.cache_dir}: sample {sample_id!r} is not in the feature cache "
                "(describe this split again; finished samples are skipped)"
            )
        try:
            f = self._handle(shard)
            image = f.get_tensor(f"{sample_id}/image")
            text = f.get_tensor(f"{sample_id}/text")
        except Exception as err:  # safetensors raises its own SafetensorError
            raise DataFormatError(
                f"{self.cache_dir / SHARDS / shard}: cannot read sample {sample_id!r} ({err}); "
                "delete the shard and run the describe stage again"
            ) from err
        if self.projector is not None:
            weight, bias = self.projector
            # Project in float32, then round as the paper's float16 files are rounded.
            image = (image.float() @ weight.T + bias).half()
        text, mask = pad_text(text, self.text_length)
        return {"vlm_image": image.float(), "vlm_text": text, "vlm_text_mask": mask}

    def descriptions(self) -> dict[str, str]:
        """Sample id -> enriched description, for every sample of the cache."""
        return {sid: e["description"] for sid, e in scan_shards(self.cache_dir).items()}


class OfficialNpyFeatures:
    """Reads the paper's per-sample ``.npy`` features (e.g. the released LEGO VLLM features).

    Files are ``<image_root>/<image_0 with "jpg" -> "npy">`` holding ``N x D`` float16 image
    tokens and ``<text_root>/<same>`` holding ``N_gen x D`` (or ``N_gen x L x D``: the last
    layer is taken) text rows, truncated or zero-padded to 77.

    Args:
        image_root: Root of the image features of one split.
        text_root: Root of the text features of the same split.
        embed_dim: Expected D, if known (a file of another width is refused).
        text_length: Rows of the returned text embedding.
    """

    def __init__(
        self,
        image_root: Path,
        text_root: Path,
        embed_dim: int | None = None,
        text_length: int = TEXT_LENGTH,
    ) -> None:
        self.image_root = Path(image_root)
        self.text_root = Path(text_root)
        self.embed_dim = embed_dim
        self.text_length = text_length
        for root in (self.image_root, self.text_root):
            if not root.is_dir():
                raise DataFormatError(f"{root}: feature folder not found")

    def _load(self, root: Path, image_0: str, sample_id: str, kind: str) -> np.ndarray:
        relative = str(PurePosixPath(image_0.replace("\\", "/"))).replace("jpg", "npy")
        where = f"sample {sample_id!r} ({kind} feature)"
        path = safe_join(root, relative, where)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError as err:
            raise DataFormatError(f"{where}: file not found: {path}") from err
        except (OSError, ValueError) as err:
            raise DataFormatError(f"{where}: unreadable feature file {path} ({err})") from err
        if array.ndim == 3 and kind == "text":
            array = array[:, -1, :]
        if array.ndim == 1:
            array = array[None]  # a one-token generation saved squeezed (the paper's edge case)
        if array.ndim != 2:
            raise DataFormatError(f"{where}: {path} has shape {array.shape}, expected N x D")
        if self.embed_dim is not None and array.shape[1] != self.embed_dim:
            raise DataFormatError(
                f"{where}: {path} has width {array.shape[1]}, expected {self.embed_dim}"
            )
        return array

    def check(self, sample_id: str, image_0: str, where: str) -> None:
        """Refuse, at setup, a record whose image or text feature file is missing.

        Raises:
            DataFormatError: If a file is missing.
        """
        relative = str(PurePosixPath(image_0.replace("\\", "/"))).replace("jpg", "npy")
        for root, kind in ((self.image_root, "image"), (self.text_root, "text")):
            path = safe_join(root, relative, where)
            if not path.is_file():
                raise DataFormatError(f"{where}: {kind} feature file not found: {path}")

    def read(self, sample_id: str, image_0: str) -> dict[str, Tensor]:
        """Return ``{"vlm_image", "vlm_text", "vlm_text_mask"}`` for one sample (float32).

        Args:
            sample_id: ``"<clip_id>/<action_id>"`` (for error messages).
            image_0: The input frame path the files are named after.

        Returns:
            The embeddings.

        Raises:
            DataFormatError: If a file is missing, unreadable or of the wrong shape.
        """
        image = torch.from_numpy(self._load(self.image_root, image_0, sample_id, "image"))
        text = torch.from_numpy(self._load(self.text_root, image_0, sample_id, "text"))
        padded, mask = pad_text(text, self.text_length)
        return {"vlm_image": image.float(), "vlm_text": padded, "vlm_text_mask": mask}


def open_features(
    root: Path,
    split: str,
    layout: FeatureLayout = "cache",
    text_root: Path | None = None,
    embed_dim: int | None = None,
    image_tokens: int | None = None,
) -> FeatureCache | OfficialNpyFeatures:
    """Open the features of one split.

    Args:
        root: ``cache``: the folder holding one cache per split (``<root>/<split>``);
            ``official_npy``: the image feature root holding ``<split>/...npy``.
        split: The split.
        layout: ``cache`` (this project's) or ``official_npy`` (the paper's files).
        text_root: ``official_npy`` only: the text feature root (holding ``<split>/``).
        embed_dim: Expected embedding width.
        image_tokens: Expected image tokens (cache only; checked per file otherwise).

    Returns:
        A reader with ``read(sample_id, image_0)``.

    Raises:
        DataFormatError: If the features are missing or do not match the expected dims.
    """
    if layout == "cache":
        return FeatureCache(Path(root) / split, embed_dim=embed_dim, image_tokens=image_tokens)
    if text_root is None:
        raise DataFormatError(f"{root}: the official_npy layout needs a text feature root too")
    return OfficialNpyFeatures(Path(root) / split, Path(text_root) / split, embed_dim=embed_dim)
