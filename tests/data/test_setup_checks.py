"""Per-record faults are found at setup (and honoured by ``on_bad_record: skip``), not mid-epoch."""

import json
import os

import pytest
from PIL import Image

from lego.data import DataFormatError, Ego4DDataModule
from lego.data.features import CacheBusyError, FeatureCache, FeatureCacheWriter, finalize_cache
from tests.data.egogen_fixture import write_egogen
from tests.data.test_features import N_IMG, D, described, manifest

FRAME = "EgoGen/ego4d.fho/val/val-clip-000/3/val-clip-000_000100"


@pytest.fixture()
def ego4d_root(tmp_path):
    write_egogen(tmp_path)
    return tmp_path


def make_dm(root, **kwargs):
    defaults = dict(root=root, resolution=16, batch_size=4, num_workers=0, flip_prob=0.0)
    defaults.update(kwargs)
    return Ego4DDataModule(**defaults)


def edit_val_records(root, fn):
    path = root / "ego4d_val.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_a_truncated_frame_is_found_by_the_default_check(tmp_path, ext):
    write_egogen(tmp_path, ext=ext)
    path = tmp_path / f"{FRAME}.{ext}"
    path.write_bytes(path.read_bytes()[:-40])  # a cut-short copy: the header still reads
    with Image.open(path) as image:
        assert image.size == (64, 36)  # what the former header-only check saw
    with pytest.raises(DataFormatError, match=r"val-clip-000/3.*truncated frame .*000100"):
        make_dm(tmp_path).setup("test")
    dm = make_dm(tmp_path, on_bad_record="skip")
    dm.setup("test")
    assert len(dm.datasets["test"]) == 5
    for i in range(len(dm.datasets["test"])):  # every sample left decodes
        dm.datasets["test"][i]


def test_an_oversized_frame_names_file_and_record_and_is_skipped(ego4d_root, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 64 x 36 = 2304 > 2 x 500
    with pytest.raises(DataFormatError, match=r"val-clip-000/3.*too large to decode safely"):
        make_dm(ego4d_root).setup("test")
    dm = make_dm(ego4d_root, on_bad_record="skip")
    with pytest.raises(DataFormatError, match="no usable records"):  # all frames are "bombs"
        dm.setup("test")


def test_a_lone_surrogate_in_the_action_is_a_bad_record(ego4d_root):
    edit_val_records(ego4d_root, lambda d: d["val-clip-001"]["10"].update(action="cut \ud800"))
    with pytest.raises(DataFormatError, match=r"val-clip-001/10.*'action' is not valid Unicode"):
        make_dm(ego4d_root).setup("test")
    dm = make_dm(ego4d_root, on_bad_record="skip")
    dm.setup("test")
    assert "val-clip-001/10" not in [r.sample_id for r in dm.datasets["test"].records]


def test_a_clip_missing_from_the_metadata_is_found_at_setup_of_scored_splits(ego4d_root):
    meta_path = ego4d_root / "ego4d_metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["val-clip-002"], meta["train-clip-000"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match=r"val-clip-002.*no entry in .*ego4d_metadata"):
        make_dm(ego4d_root).setup("test")
    dm = make_dm(ego4d_root, on_bad_record="skip")
    dm.setup("test")
    assert len(dm.datasets["test"]) == 4
    dm.setup("fit")  # training does not need the frame sizes: train-clip-000 stays
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["val"]) == 4


def write_cache(cache_dir, ids, shard_size=2):
    writer = FeatureCacheWriter(cache_dir, shard_size=shard_size)
    writer.prepare(manifest(), None, write=True)
    writer.add(described(ids, [5] * len(ids)))
    writer.flush()
    finalize_cache(cache_dir)
    return writer


def val_ids(root):
    return [f"{c}/{a}" for c, acts in json.loads((root / "ego4d_val.json").read_text()).items()
            for a in acts]


def test_samples_missing_from_the_cache_are_found_at_setup(ego4d_root, tmp_path):
    ids = val_ids(ego4d_root)
    write_cache(tmp_path / "features" / "val", ids[:-1])
    dm = make_dm(ego4d_root, features=tmp_path / "features")
    with pytest.raises(DataFormatError, match=rf"{ids[-1]}.*no features in the cache"):
        dm.setup("test")
    dm = make_dm(ego4d_root, features=tmp_path / "features", on_bad_record="skip")
    dm.setup("test")
    assert len(dm.datasets["test"]) == len(ids) - 1
    assert dm.datasets["test"][0].vlm_image.shape == (N_IMG, D)


def test_a_damaged_shard_is_named_at_setup_and_set_aside_by_a_resumed_describe(tmp_path):
    cache = tmp_path / "cache"
    write_cache(cache, ["c/a0", "c/a1", "c/a2", "c/a3"])
    shards = sorted((cache / "shards").glob("*.safetensors"))
    assert len(shards) == 2
    shards[1].write_bytes(shards[1].read_bytes()[:-10])  # cut short, index.json still lists it
    with pytest.raises(DataFormatError, match=rf"{shards[1].name}: damaged feature-cache shard"):
        FeatureCache(cache)
    resumed = FeatureCacheWriter(cache)
    assert resumed.completed() == {"c/a0", "c/a1"}  # the damaged shard's samples are redone
    assert not shards[1].exists() and shards[1].with_name(shards[1].name + ".damaged").exists()
    resumed.add(described(["c/a2", "c/a3"], [5, 5]))
    resumed.flush()
    finalize_cache(cache)
    reader = FeatureCache(cache)
    assert len(reader) == 4 and reader.read("c/a3")["vlm_image"].shape == (N_IMG, D)


def test_shards_are_published_with_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_cache(tmp_path / "cache", ["c/a0"])
    finally:
        os.umask(old)
    for shard in (tmp_path / "cache" / "shards").glob("*.safetensors"):
        assert shard.stat().st_mode & 0o777 == 0o644  # safetensors alone writes 0600


def test_one_describe_run_per_cache(tmp_path):
    first = FeatureCacheWriter(tmp_path / "cache")
    first.lock()
    second = FeatureCacheWriter(tmp_path / "cache")
    with pytest.raises(CacheBusyError, match=rf"another describe run \(pid {os.getpid()}"):
        second.lock()
    first.unlock()
    second.lock()  # free again once the first run is done
    second.unlock()
