"""Import the paper's released per-sample ``.npy`` VLM features into a feature cache.

The LEGO release ships, for each sample, the VLM image embedding (``256 x 5120`` float16, the
projector output) and text embedding (``N_gen x 5120`` float16) as ``.npy`` files named after the
input frame (``<root>/<image_0 with jpg -> npy>``), and the enriched description in the records
(``llava_forecast_finetune``). :func:`import_npy_features` copies one split of them into this
project's cache (:mod:`lego.data.features`): sharded safetensors with a manifest and an index,
checked at setup, read without one file open per sample. What the cache returns equals what
:class:`~lego.data.features.OfficialNpyFeatures` reads from the files, bit for bit (the text rows
beyond the 77 the model uses are not kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lego.data.features import (
    FORMAT,
    FORMAT_VERSION,
    TEXT_LENGTH,
    DescribedSamples,
    FeatureCacheWriter,
    OfficialNpyFeatures,
    finalize_cache,
)
from lego.data.io import DataFormatError
from lego.data.records import read_records


@dataclass
class ImportReport:
    """What an import did."""

    cache_dir: Path
    imported: int
    already: int
    total: int


def manifest_for(image_root: Path, text_root: Path, image_tokens: int, embed_dim: int) -> dict:
    """The cache manifest of imported features (what produced them: the paper's release)."""
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": {"name_or_path": "official .npy features (imported)",
                  "image_root": str(image_root), "text_root": str(text_root)},
        "template": {},
        "generation": {},
        "image_storage": "projected",
        "dims": {"image_tokens": image_tokens, "vision_dim": embed_dim, "embed_dim": embed_dim,
                 "text_length": TEXT_LENGTH},
        "dtype": "float16",
    }


def import_npy_features(
    records_file: Path,
    image_root: Path,
    text_root: Path,
    cache_dir: Path,
    description_key: str = "llava_forecast_finetune",
    embed_dim: int | None = None,
    shard_size: int = 256,
    progress: bool = True,
) -> ImportReport:
    """Copy one split's ``.npy`` features into a feature cache (resumable).

    Args:
        records_file: The split's records (``ego4d_val.json``); each record's ``image_0`` names
            its files, its ``description_key`` gives the description stored beside them.
        image_root: Folder of the split's image features.
        text_root: Folder of the split's text features.
        cache_dir: The cache folder to write (``features/ego4d/val``); samples it already
            holds are skipped, so an interrupted import resumes.
        description_key: Record field of the enriched description.
        embed_dim: Expected width D (a file of another width is an error).
        shard_size: Samples per shard.
        progress: Show a progress bar.

    Returns:
        The counts.

    Raises:
        DataFormatError: Naming the file and record of a missing or malformed feature file;
            the samples imported before it are kept.
    """
    records = read_records(Path(records_file))
    reader = OfficialNpyFeatures(Path(image_root), Path(text_root), embed_dim=embed_dim)
    writer = FeatureCacheWriter(Path(cache_dir), shard_size=shard_size)
    writer.lock()
    try:
        done = writer.completed()
        todo = [r for r in records if r.sample_id not in done]
        prepared = False
        for rec in tqdm(todo, desc=f"import {Path(cache_dir).name}", unit="sample",
                        disable=not progress):
            image_0 = rec.fields.get("image_0")
            if not isinstance(image_0, str):
                raise DataFormatError(f"{rec.where()}: missing field 'image_0'")
            features = reader.read(rec.sample_id, image_0)
            image, text = features["vlm_image"], features["vlm_text"]
            mask = features["vlm_text_mask"]
            if not prepared:
                manifest = manifest_for(Path(image_root), Path(text_root), image.shape[0],
                                        image.shape[1])
                writer.prepare(manifest, None, write=True)
                prepared = True
            description = rec.fields.get(description_key)
            writer.add(DescribedSamples(
                sample_ids=[rec.sample_id],
                image_0=[image_0],
                descriptions=[description if isinstance(description, str) else ""],
                num_tokens=[int(mask.sum())],
                image=image[None].to(torch.float16),
                text=text[None].to(torch.float16),
                text_mask=mask[None],
                image_storage="projected",
            ))
    finally:
        writer.flush()  # what was read is kept, also when a later file is bad
        if (Path(cache_dir) / "shards").is_dir():
            finalize_cache(Path(cache_dir))
        writer.unlock()
    return ImportReport(Path(cache_dir), writer.written, len(done), len(records))
