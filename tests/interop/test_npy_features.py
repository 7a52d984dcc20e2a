"""import-weights features: the paper's .npy VLM features into a feature cache, exactly."""

import numpy as np
import pytest
import torch

from lego import tools
from lego.data import Ego4DDataModule, read_records
from lego.data.features import FeatureCache, OfficialNpyFeatures
from tests.data.egogen_fixture import write_egogen

D, TOKENS = 16, 6


def write_npy(root, records):
    """Per-sample files as the release names them; text of 80 rows (more than 77), a
    one-token generation saved squeezed (1-D), and ordinary ones."""
    rng = np.random.default_rng(0)
    for k, rec in enumerate(records):
        name = rec.fields["image_0"].replace("jpg", "npy")
        rows = (80, 1, 5)[k % 3]
        text = rng.standard_normal((rows, D)).astype(np.float16)
        for kind, array in (("image", rng.standard_normal((TOKENS, D)).astype(np.float16)),
                            ("text", text[0] if rows == 1 else text)):
            path = root / kind / name
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, array)


@pytest.fixture()
def release(tmp_path):
    write_egogen(tmp_path / "data")
    records = read_records(tmp_path / "data" / "ego4d_val.json")
    write_npy(tmp_path / "npy", records)
    return tmp_path, records


def argv(tmp_path, *extra):
    return ["features", "--records", str(tmp_path / "data" / "ego4d_val.json"),
            "--image-root", str(tmp_path / "npy" / "image"),
            "--text-root", str(tmp_path / "npy" / "text"),
            "--out", str(tmp_path / "features" / "val"), "--shard-size", "2", "--no-progress",
            *extra]


def test_imported_features_read_back_exactly(release, capsys):
    tmp_path, records = release
    assert tools.run_tool("import-weights", argv(tmp_path, "--embed-dim", str(D))) == 0
    assert f"{len(records)} samples imported" in capsys.readouterr().out
    cache = FeatureCache(tmp_path / "features" / "val", embed_dim=D, image_tokens=TOKENS)
    files = OfficialNpyFeatures(tmp_path / "npy" / "image", tmp_path / "npy" / "text")
    for rec in records:
        ours = cache.read(rec.sample_id)
        theirs = files.read(rec.sample_id, rec.fields["image_0"])
        for key in ("vlm_image", "vlm_text", "vlm_text_mask"):
            assert torch.equal(ours[key], theirs[key]), (rec.sample_id, key)
    assert cache.descriptions()[records[0].sample_id] == records[0].fields[
        "llava_forecast_finetune"]
    dm = Ego4DDataModule(root=tmp_path / "data", resolution=16, batch_size=2, num_workers=0,
                         flip_prob=0.0, features=tmp_path / "features", vlm_dim=D)
    dm.setup("test")
    assert dm.datasets["test"][0].vlm_text.shape == (77, D)


def test_a_bad_file_names_file_and_record_and_a_rerun_continues(release, capsys):
    tmp_path, records = release
    broken = tmp_path / "npy" / "text" / records[3].fields["image_0"].replace("jpg", "npy")
    saved = broken.read_bytes()
    broken.write_bytes(b"not an array")
    assert tools.run_tool("import-weights", argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"sample {records[3].sample_id!r} (text feature)" in err and "unreadable" in err
    assert len(FeatureCache(tmp_path / "features" / "val")) == 3  # the finished ones are kept
    broken.write_bytes(saved)
    assert tools.run_tool("import-weights", argv(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"{len(records) - 3} samples imported, 3 already there" in out
    assert len(FeatureCache(tmp_path / "features" / "val")) == len(records)


def test_features_of_another_width_are_refused(release, capsys):
    tmp_path, _ = release
    assert tools.run_tool("import-weights", argv(tmp_path, "--embed-dim", "5120")) == 2
    assert "has width 16, expected 5120" in capsys.readouterr().err
