import json

import pytest
import torch
from PIL import Image

from lego.data.records import read_records
from lego.metrics.protocol import pil_to_tensor01
from lego.metrics.synthego_score import ActionTruth, SynthEgoActionScore


def _frames(root):
    metadata = json.loads((root / "synthego_metadata.json").read_text())
    records = read_records(root / "synthego_val.json")
    base = root / "EgoGen" / "synthego" / "val"
    out = []
    for rec in records:
        load = lambda rel: pil_to_tensor01(Image.open(base / rel))  # noqa: E731
        out.append((rec.sample_id, load(rec.fields["image_0"]), load(rec.fields["image_1"])))
    return metadata, out


def test_ground_truth_scores_perfectly_and_the_input_frame_does_not(synthego_root):
    metadata, frames = _frames(synthego_root)
    truth = SynthEgoActionScore(metadata)
    copy = SynthEgoActionScore(metadata)
    for sid, inp, gt in frames:
        truth.update(gt[None], gt[None], [sid])
        copy.update(inp[None], gt[None], [sid])
    t, c = truth.compute(), copy.compute()
    assert t["hand_error"].item() == pytest.approx(0.0)
    assert t["hand_hit"].item() == pytest.approx(100.0)
    assert c["hand_hit"].item() <= 25.0
    assert c["hand_error"].item() > 4.0  # pixels at 32 x 32


def test_resized_frames_are_measured_at_metadata_scale(synthego_root):
    metadata, frames = _frames(synthego_root)
    score = SynthEgoActionScore(metadata)
    for sid, _, gt in frames:
        big = torch.nn.functional.interpolate(gt[None], size=(128, 128), mode="nearest")
        score.update(big, gt[None], [sid])
    assert score.compute()["hand_error"].item() < 1.0
    assert score.compute()["hand_hit"].item() == pytest.approx(100.0)


def test_swapped_hand_is_a_miss(synthego_root):
    metadata, frames = _frames(synthego_root)
    score = SynthEgoActionScore(metadata)
    for sid, _, gt in frames:
        score.update(gt.flip(-1)[None], gt[None], [sid])  # mirror: the other hand acts
    assert score.compute()["hand_hit"].item() <= 25.0


def test_missing_scene_record_names_the_sample(synthego_root):
    metadata, _ = _frames(synthego_root)
    with pytest.raises(KeyError, match="nope/a0"):
        ActionTruth.from_metadata(metadata, "nope/a0")
