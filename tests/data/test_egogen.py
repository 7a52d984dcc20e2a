import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lego.batch import EgoBatch
from lego.data import (
    DataFormatError,
    Ego4DDataModule,
    EpicKitchensDataModule,
    SynthEgoDataModule,
    read_records,
)
from lego.data.sampling import EpochIndex
from tests.data.egogen_fixture import write_egogen


@pytest.fixture()
def ego4d_root(tmp_path):
    write_egogen(tmp_path)
    return tmp_path


def make_dm(root, cls=Ego4DDataModule, **kwargs):
    defaults = dict(root=root, resolution=16, batch_size=4, num_workers=0, flip_prob=0.0)
    defaults.update(kwargs)
    return cls(**defaults)


def test_counts_ids_order_and_cleaned_labels(ego4d_root):
    dm = make_dm(ego4d_root)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == 6 and len(dm.datasets["val"]) == 6
    ids = [r.sample_id for r in train.records]
    assert ids == [f"train-clip-{c:03d}/{a}" for c in range(3) for a in ("3", "10")]
    assert [r.action for r in train.records][:3] == [
        "pick up the knife", "wash the plate", "cut the onion",
    ]
    assert train.records[0].raw_action == "#C C picks up the knife"
    assert train.records[0].text == "pick up the knife"


def test_read_records_keeps_json_order(ego4d_root):
    recs = read_records(ego4d_root / "ego4d_val.json")
    assert [r.sample_id for r in recs][:2] == ["val-clip-000/3", "val-clip-000/10"]


def test_frames_are_squashed_lanczos_in_minus_one_one(ego4d_root):
    dm = make_dm(ego4d_root, resolution=24)
    dm.setup("test")
    sample = dm.datasets["test"][0]
    assert sample.input_frame.shape == (3, 24, 24) and sample.target_frame.shape == (3, 24, 24)
    assert sample.input_frame.dtype == torch.float32
    assert -1.0 <= sample.input_frame.min() and sample.input_frame.max() <= 1.0
    rec = dm.datasets["test"].records[0]
    expected = np.asarray(
        Image.open(rec.input_path).convert("RGB").resize((24, 24), Image.Resampling.LANCZOS),
        dtype=np.float32,
    )
    got = (sample.input_frame.permute(1, 2, 0).numpy() + 1.0) * 127.5
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_flip_is_joint_and_only_on_train(ego4d_root):
    plain = make_dm(ego4d_root)
    plain.setup("fit")
    flipped = make_dm(ego4d_root, flip_prob=1.0)
    flipped.setup("fit")
    a, b = plain.datasets["train"][0], flipped.datasets["train"][0]
    assert torch.equal(b.input_frame, a.input_frame.flip(-1))
    assert torch.equal(b.target_frame, a.target_frame.flip(-1))
    assert b.text == a.text  # a flip does not touch the text
    assert torch.equal(flipped.datasets["val"][0].input_frame, plain.datasets["val"][0].input_frame)


def test_flip_probability_is_respected(ego4d_root):
    dm = make_dm(ego4d_root, flip_prob=0.5)
    dm.setup("fit")
    ds = dm.datasets["train"]
    ref = make_dm(ego4d_root)
    ref.setup("fit")
    base = ref.datasets["train"][0].input_frame
    # drawn from (seed, epoch, sample), not the global random state: about half of the epochs
    flips = [not torch.equal(ds[EpochIndex(e, 0)].input_frame, base) for e in range(200)]
    assert 70 < sum(flips) < 130
    assert flips == [ds.flipped(e, 0) for e in range(200)]


def test_dataloader_yields_typed_batches(ego4d_root):
    dm = make_dm(ego4d_root, text_source="description")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, EgoBatch)
    assert batch.input_frames.shape == (4, 3, 16, 16)
    assert batch.target_frames.shape == (4, 3, 16, 16)
    assert len(batch.texts) == 4 and batch.texts[0].startswith("Detailed description")
    assert batch.vlm_image is None


def test_curated_conversations_join_on_input_frame(ego4d_root):
    dm = make_dm(ego4d_root)
    dm.setup("fit")
    rec = dm.datasets["train"].records[1]
    assert rec.curated == f"Answer for {rec.clip_id}/{rec.action_id}."
    assert rec.question == f"How does the person properly {rec.clip_id}?"
    assert dm.datasets["val"].records[0].curated is None


def test_epic_labels_are_verbatim(tmp_path):
    write_egogen(tmp_path, name="epickitchen", frames_subdir="epickitchen",
                 labels=["open fridge", "#C C takes plate"])
    dm = make_dm(tmp_path, cls=EpicKitchensDataModule)
    dm.setup("test")
    actions = [r.action for r in dm.datasets["test"].records[:2]]
    assert actions == ["open fridge", "#C C takes plate"]


def test_raw_action_text_source(ego4d_root):
    dm = make_dm(ego4d_root, text_source="raw_action")
    dm.setup("test")
    assert dm.datasets["test"].records[0].text == "#C C picks up the knife"


# ------------------------------------------------------------------------------- bad input
def _edit(root, split, fn):
    path = root / f"ego4d_{split}.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_missing_frame_names_file_and_record(ego4d_root):
    (ego4d_root / "EgoGen/ego4d.fho/val/val-clip-001/10").joinpath(
        "val-clip-001_000201.jpg").unlink()
    dm = make_dm(ego4d_root)
    with pytest.raises(DataFormatError) as err:
        dm.setup("test")
    msg = str(err.value)
    assert "ego4d_val.json" in msg and "val-clip-001/10" in msg and "not found" in msg
    assert "1 bad record" in msg


def test_unreadable_frame(ego4d_root):
    path = ego4d_root / "EgoGen/ego4d.fho/val/val-clip-000/3/val-clip-000_000100.jpg"
    path.write_bytes(b"this is not an image")
    with pytest.raises(DataFormatError, match=r"val-clip-000/3.*unreadable frame"):
        make_dm(ego4d_root).setup("test")


def test_truncated_frame_is_found_with_decode_check(ego4d_root):
    path = ego4d_root / "EgoGen/ego4d.fho/val/val-clip-000/3/val-clip-000_000100.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match=r"val-clip-000/3.*(corrupt|unreadable)"):
        make_dm(ego4d_root, check_frames="decode").setup("test")


def test_malformed_json_names_file_and_position(ego4d_root):
    (ego4d_root / "ego4d_val.json").write_text('{"clip": {"a": {"image_0": "x"}')
    with pytest.raises(DataFormatError, match=r"ego4d_val.json: malformed JSON at line 1"):
        make_dm(ego4d_root).setup("test")


def test_wrong_nesting(ego4d_root):
    (ego4d_root / "ego4d_val.json").write_text('[{"image_0": "x"}]')
    with pytest.raises(DataFormatError, match="expected a JSON object"):
        make_dm(ego4d_root).setup("test")


def test_missing_field(ego4d_root):
    _edit(ego4d_root, "val", lambda d: d["val-clip-002"]["3"].pop("image_1"))
    with pytest.raises(DataFormatError, match=r"record 'val-clip-002/3': missing field 'image_1'"):
        make_dm(ego4d_root).setup("test")


@pytest.mark.parametrize("bad", ["../../../etc/passwd", "/etc/passwd", "a/../../b.jpg", "C:/x.jpg"])
def test_unsafe_paths_are_refused(ego4d_root, bad):
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["3"].__setitem__("image_0", bad))
    with pytest.raises(DataFormatError, match=r"val-clip-000/3.*unsafe frame path"):
        make_dm(ego4d_root).setup("test")


def test_missing_description_for_description_text(ego4d_root):
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["10"].pop("llava_forecast_finetune"))
    with pytest.raises(DataFormatError, match=r"val-clip-000/10.*no 'llava_forecast_finetune'"):
        make_dm(ego4d_root, text_source="description").setup("test")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_non_rgb_frames_are_converted(ego4d_root, mode):
    path = ego4d_root / "EgoGen/ego4d.fho/val/val-clip-000/3/val-clip-000_000100.png"
    Image.open(path.with_suffix(".jpg")).convert(mode).save(path)
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["3"].__setitem__(
        "image_0", "val-clip-000/3/val-clip-000_000100.png"))
    dm = make_dm(ego4d_root)
    dm.setup("test")
    frame = dm.datasets["test"][0].input_frame
    assert frame.shape == (3, 16, 16)
    if mode in ("L", "LA"):
        assert torch.equal(frame[0], frame[1]) and torch.equal(frame[1], frame[2])


def test_unsupported_image_mode(ego4d_root):
    path = ego4d_root / "EgoGen/ego4d.fho/val/val-clip-000/3/val-clip-000_000100.png"
    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(path)
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["3"].__setitem__(
        "image_0", "val-clip-000/3/val-clip-000_000100.png"))
    with pytest.raises(DataFormatError, match="unsupported image mode"):
        make_dm(ego4d_root).setup("test")


def test_skip_bad_records_logs_each_and_total(ego4d_root, caplog):
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["3"].pop("action"))
    _edit(ego4d_root, "val", lambda d: d["val-clip-001"]["10"].__setitem__("image_1", "../x.jpg"))
    dm = make_dm(ego4d_root, on_bad_record="skip")
    with caplog.at_level(logging.WARNING, logger="lego.data.egogen"):
        dm.setup("test")
    assert len(dm.datasets["test"]) == 4
    text = caplog.text
    assert "Skipping val-clip-000/3" in text and "Skipping val-clip-001/10" in text
    assert "Skipped 2 bad record(s)" in text


def test_curated_only_trains_on_the_records_with_an_answer(ego4d_root, caplog):
    """The release's curated file covers part of the train split (about 19k of 85k on Ego4D)."""
    path = ego4d_root / "curation_from_gpt/ego4d_for_tuning_forecasting.json"
    conversations = json.loads(path.read_text())
    path.write_text(json.dumps(conversations[:2]))
    everything = make_dm(ego4d_root)
    everything.setup("fit")
    assert sum(r.curated is not None for r in everything.datasets["train"].records) == 2
    assert len(everything.datasets["train"]) == 6  # without the option: every record
    caplog.set_level(logging.INFO)
    dm = make_dm(ego4d_root, curated_only=True)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2
    assert all(r.curated for r in dm.datasets["train"].records)
    assert len(dm.datasets["val"]) == 6  # validation keeps every record
    assert "training on the 2 of 6 records that have a curated answer" in caplog.text
    path.write_text("[]")
    with pytest.raises(DataFormatError, match="none of the 6 records"):
        make_dm(ego4d_root, curated_only=True).setup("fit")


def test_malformed_curated_file(ego4d_root):
    (ego4d_root / "curation_from_gpt/ego4d_for_tuning_forecasting.json").write_text(
        json.dumps([{"id": "x", "conversations": []}]))
    with pytest.raises(DataFormatError, match=r"for_tuning_forecasting.json: entry 0 \(id 'x'\)"):
        make_dm(ego4d_root).setup("fit")


def test_predict_does_not_require_targets(ego4d_root):
    _edit(ego4d_root, "val", lambda d: d["val-clip-000"]["3"].pop("image_1"))
    dm = make_dm(ego4d_root)
    dm.setup("predict")
    assert dm.datasets["predict"][0].target_frame is None
    assert dm.datasets["predict"][1].target_frame is not None


def test_synthego_datamodule_reads_the_generator_output(synthego_root):
    dm = SynthEgoDataModule(root=synthego_root, resolution=32, batch_size=8, num_workers=0,
                            flip_prob=0.0, text_source="description",
                            description_key="oracle_description", check_frames="decode")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 24 and len(dm.datasets["val"]) == 8
    rec = dm.datasets["train"].records[0]
    assert not rec.action.startswith("#")
    assert rec.curated == rec.text
    batch = next(iter(dm.val_dataloader()))
    assert batch.input_frames.shape == (8, 3, 32, 32)
    assert dm.metadata()[rec.clip_id]["height"] == 32
