"""VLM feature cache (writer, reader, manifest checks) and the paper's .npy layout reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lego.batch import EgoBatch
from lego.data import SynthEgoDataModule, read_records
from lego.data.features import (
    FORMAT,
    DescribedSamples,
    FeatureCache,
    FeatureCacheWriter,
    OfficialNpyFeatures,
    finalize_cache,
    open_features,
)
from lego.data.io import DataFormatError

N_IMG, DV, D = 6, 8, 16


def manifest(**over):
    base = {
        "format": FORMAT,
        "version": 1,
        "model": {"name_or_path": "tiny", "adapter": None, "projector_sha256": "x"},
        "template": {"query": "q {action}"},
        "generation": {"temperature": 0.2},
        "image_storage": "projected",
        "dims": {"image_tokens": N_IMG, "vision_dim": DV, "embed_dim": D, "text_length": 77},
        "dtype": "float16",
    }
    base.update(over)
    return base


def described(ids, num_tokens, width=D, storage="projected", seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(ids)
    text = torch.randn(b, 77, D, generator=g)
    mask = torch.zeros(b, 77, dtype=torch.bool)
    for i, n in enumerate(num_tokens):
        text[i, n:] = 0
        mask[i, :n] = True
    return DescribedSamples(
        sample_ids=list(ids),
        image_0=[f"{s}/frame.png" for s in ids],
        descriptions=[f"description of {s}" for s in ids],
        num_tokens=list(num_tokens),
        image=torch.randn(b, N_IMG, width, generator=g),
        text=text,
        text_mask=mask,
        image_storage=storage,
    )


def test_cache_roundtrip_shards_and_index(tmp_path):
    cache = tmp_path / "val"
    writer = FeatureCacheWriter(cache, rank=0, shard_size=2)
    writer.prepare(manifest(), None, write=True)
    out = described(["c0/a0", "c0/a1", "c1/a0"], [3, 1, 90])
    writer.add(out)
    writer.flush()
    assert len(list((cache / "shards").glob("*.safetensors"))) == 2
    entries = finalize_cache(cache)
    assert set(entries) == {"c0/a0", "c0/a1", "c1/a0"}
    index = json.loads((cache / "index.json").read_text())
    assert set(index["samples"]) == set(entries)
    assert json.loads((cache / "descriptions.json").read_text())["c0/a1"] == "description of c0/a1"

    reader = FeatureCache(cache, embed_dim=D, image_tokens=N_IMG)
    assert len(reader) == 3 and "c0/a0" in reader
    for i, (sid, n) in enumerate([("c0/a0", 3), ("c0/a1", 1), ("c1/a0", 77)]):
        got = reader.read(sid, "")
        assert got["vlm_image"].shape == (N_IMG, D) and got["vlm_image"].dtype == torch.float32
        assert got["vlm_text"].shape == (77, D)
        assert got["vlm_text_mask"].sum().item() == n
        torch.testing.assert_close(got["vlm_image"], out.image[i].half().float())
        torch.testing.assert_close(got["vlm_text"][:n], out.text[i, :n].half().float())
        assert (got["vlm_text"][n:] == 0).all()


def test_vision_storage_applies_saved_projector(tmp_path):
    weight, bias = torch.randn(D, DV), torch.randn(D)
    writer = FeatureCacheWriter(tmp_path / "val", shard_size=8)
    writer.prepare(manifest(image_storage="vision"), (weight, bias), write=True)
    out = described(["c/a"], [2], width=DV, storage="vision")
    writer.add(out)
    writer.flush()
    got = FeatureCache(tmp_path / "val").read("c/a")
    expected = out.image[0] @ weight.T + bias
    assert got["vlm_image"].shape == (N_IMG, D)
    torch.testing.assert_close(got["vlm_image"], expected, atol=2e-2, rtol=2e-3)


def test_index_rebuilt_when_shards_were_added(tmp_path):
    cache = tmp_path / "val"
    first = FeatureCacheWriter(cache, shard_size=4)
    first.prepare(manifest(), None, write=True)
    first.add(described(["c/a0"], [2]))
    first.flush()
    finalize_cache(cache)
    second = FeatureCacheWriter(cache, rank=1, shard_size=4)  # e.g. a killed, resumed run
    second.add(described(["c/a1"], [2], seed=1))
    second.flush()
    assert second.completed() == {"c/a0", "c/a1"}
    assert set(FeatureCache(cache).entries) == {"c/a0", "c/a1"}


def test_cache_refuses_other_model_and_dims(tmp_path):
    cache = tmp_path / "val"
    FeatureCacheWriter(cache).prepare(manifest(), None, write=True)
    other = manifest(model={"name_or_path": "other", "adapter": None, "projector_sha256": "y"})
    with pytest.raises(DataFormatError, match="different model or settings: 'model'"):
        FeatureCacheWriter(cache).prepare(other, None, write=True)
    with pytest.raises(DataFormatError, match="embed_dim=16 but 32 is expected"):
        FeatureCache(cache, embed_dim=32)
    with pytest.raises(DataFormatError, match="not a feature cache"):
        FeatureCache(tmp_path / "train")
    with pytest.raises(DataFormatError, match="sample 'c/zz' is not in the feature cache"):
        FeatureCache(cache).read("c/zz", "c/zz/f.png")


def test_official_npy_layout(tmp_path):
    image_root, text_root = tmp_path / "img", tmp_path / "txt"
    rel = "clip0/act0/frame_01.jpg"
    (image_root / "clip0/act0").mkdir(parents=True)
    (text_root / "clip0/act0").mkdir(parents=True)
    image = np.random.rand(N_IMG, D).astype(np.float16)
    np.save(image_root / "clip0/act0/frame_01.npy", image)
    text3 = np.random.rand(100, 3, D).astype(np.float16)  # tokens x layers x dim
    np.save(text_root / "clip0/act0/frame_01.npy", text3)
    reader = OfficialNpyFeatures(image_root, text_root, embed_dim=D)
    got = reader.read("clip0/act0", rel)
    np.testing.assert_array_equal(got["vlm_image"].numpy(), image.astype(np.float32))
    np.testing.assert_array_equal(got["vlm_text"].numpy(), text3[:77, -1].astype(np.float32))
    assert got["vlm_text_mask"].all()
    # the paper's one-token edge case: a squeezed (D,) array
    np.save(text_root / "clip0/act0/frame_01.npy", np.ones(D, dtype=np.float16))
    got = reader.read("clip0/act0", rel)
    assert got["vlm_text_mask"].sum().item() == 1 and (got["vlm_text"][1:] == 0).all()
    with pytest.raises(DataFormatError, match="sample 'clip0/act0'.*width 16, expected 32"):
        OfficialNpyFeatures(image_root, text_root, embed_dim=32).read("clip0/act0", rel)
    with pytest.raises(DataFormatError, match="sample 'clip9/a'.*file not found"):
        reader.read("clip9/a", "clip9/a/f.jpg")


def test_datamodule_attaches_cache_and_checks_dims(synthego_root, tmp_path):
    records = read_records(synthego_root / "synthego_val.json")
    ids = [r.sample_id for r in records]
    writer = FeatureCacheWriter(tmp_path / "features" / "val", shard_size=3)
    writer.prepare(manifest(), None, write=True)
    out = described(ids, [1 + i for i in range(len(ids))])
    writer.add(out)
    writer.flush()
    finalize_cache(tmp_path / "features" / "val")

    dm = SynthEgoDataModule(
        root=synthego_root,
        resolution=32,
        batch_size=4,
        num_workers=0,
        features=tmp_path / "features",
        vlm_dim=D,
        vlm_image_tokens=N_IMG,
    )
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch, EgoBatch)
    assert batch.vlm_image.shape == (4, N_IMG, D)
    assert batch.vlm_text.shape == (4, 77, D)
    assert batch.vlm_text_mask.sum(1).tolist() == [1, 2, 3, 4]
    torch.testing.assert_close(
        batch.vlm_image[2], out.image[ids.index(batch.sample_ids[2])].half().float()
    )

    bad = SynthEgoDataModule(
        root=synthego_root, resolution=32, num_workers=0, features=tmp_path / "features", vlm_dim=32
    )
    with pytest.raises(DataFormatError, match="embed_dim=16 but 32 is expected"):
        bad.setup("test")
    npy = SynthEgoDataModule(
        root=synthego_root,
        features=tmp_path / "img",
        features_layout="official_npy",
        features_text=tmp_path / "txt",
    )
    with pytest.raises(DataFormatError, match="feature folder not found"):
        npy.setup("test")
    assert open_features(tmp_path / "features", "val").embed_dim == D
