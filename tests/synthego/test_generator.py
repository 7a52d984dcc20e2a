import json

import numpy as np
import pytest
from PIL import Image

from lego.data.io import DataFormatError
from lego.data.narration import clean_ego4d_narration
from lego.synthego import generate, vocabulary, world, write_grid
from lego.synthego.world import tokenize_words


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".synthego_parts" not in p.parts
    }


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, train=10, val=4, size=24, seed=3, workers=1, progress=False)
    generate(b, train=10, val=4, size=24, seed=3, workers=2, progress=False)
    generate(c, train=10, val=4, size=24, seed=4, workers=1, progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    assert len(fa) == len(fc) and fa != fc
    # 14 pairs x 2 frames + 4 val GT frames + train/val/metadata/curated JSON
    assert sum(k.endswith(".png") for k in fa) == 14 * 2 + 4
    assert {"synthego_train.json", "synthego_val.json", "synthego_metadata.json",
            "curation_from_gpt/synthego_for_tuning_forecasting.json"} <= set(fa)


def test_interrupted_generation_resumes_to_identical_files(tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    generate(ref, train=70, val=4, size=24, seed=1, workers=1, progress=False)
    counts = generate(run, train=70, val=4, size=24, seed=1, workers=1, progress=False)
    assert counts["rendered"] == 74
    # Simulate a kill: one chunk never finished (part file and one of its frames missing).
    (run / ".synthego_parts" / "train_00001.json").unlink()
    next((run / "EgoGen/synthego/train/train_00032").rglob("*.png")).unlink()
    (run / "synthego_train.json").unlink()
    counts = generate(run, train=70, val=4, size=24, seed=1, workers=1, progress=False)
    assert counts["rendered"] == 6  # clips 32-34 (2 + 2 + 2 pairs) only
    assert _files(run) == _files(ref)


def test_other_settings_in_same_folder_are_refused(tmp_path):
    generate(tmp_path, train=4, val=2, size=24, seed=1, workers=1, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        generate(tmp_path, train=4, val=2, size=32, seed=1, workers=1, progress=False)


def test_records_follow_the_release_format(synthego_root):
    train = json.loads((synthego_root / "synthego_train.json").read_text())
    val = json.loads((synthego_root / "synthego_val.json").read_text())
    meta = json.loads((synthego_root / "synthego_metadata.json").read_text())
    assert sum(len(v) for v in train.values()) == 24 and sum(len(v) for v in val.values()) == 8
    for split, records in (("train", train), ("val", val)):
        for clip, actions in records.items():
            assert meta[clip]["height"] == 32 and meta[clip]["width"] == 32
            for aid, rec in actions.items():
                assert rec["image_0"].startswith(f"{clip}/{aid}/")
                assert sorted([rec["image_0"], rec["image_1"]])[0] == rec["image_0"]
                assert rec["action"].startswith("#C C ")
                frames = synthego_root / "EgoGen/synthego" / split
                assert Image.open(frames / rec["image_1"]).size == (32, 32)
                if split == "val":
                    gt = synthego_root / "EgoGen/synthego/val_gt_for_metric" / rec["image_1"]
                    assert gt.read_bytes() == (frames / rec["image_1"]).read_bytes()


def test_descriptions_name_hand_colour_place_and_match_metadata(synthego_root):
    val = json.loads((synthego_root / "synthego_val.json").read_text())
    meta = json.loads((synthego_root / "synthego_metadata.json").read_text())
    for clip, actions in val.items():
        for aid, rec in actions.items():
            m = meta[clip]["actions"][aid]
            desc = rec["oracle_description"]
            target = meta[clip]["objects"][m["target_object"]]
            assert f"{m['acting_hand']} hand" in desc
            assert f"{target['colour']} {target['type']}" in desc
            if m["verb"] != "pour":
                assert any(f"{p} of the table" in desc for p in world.PLACES)
            assert clean_ego4d_narration(rec["action"]).split(" the ")[0] == m["verb"]
            assert set(tokenize_words(desc)) <= set(vocabulary())


def test_curated_conversations_use_the_paper_query(synthego_root):
    curated = json.loads(
        (synthego_root / "curation_from_gpt/synthego_for_tuning_forecasting.json").read_text())
    train = json.loads((synthego_root / "synthego_train.json").read_text())
    assert len(curated) == 24
    first = curated[0]
    clip, aid = first["id"].rsplit("_", 1)
    rec = train[clip][aid]
    assert first["image"] == rec["image_0"]
    human, gpt = first["conversations"]
    assert human["value"] == "<image>\n" + world.QUERY.format(clean_ego4d_narration(rec["action"]))
    assert gpt["value"] == rec["oracle_description"]


def test_acting_hand_is_drawn_where_the_metadata_says(synthego_root):
    """The skin-coloured pixels of the action frame sit at the recorded hand position."""
    generate_root = synthego_root
    val = json.loads((generate_root / "synthego_val.json").read_text())
    meta = json.loads((generate_root / "synthego_metadata.json").read_text())
    for clip, actions in val.items():
        skin = np.array(meta[clip]["skin_rgb"])
        for aid, rec in actions.items():
            m = meta[clip]["actions"][aid]
            img = np.asarray(Image.open(generate_root / "EgoGen/synthego/val" / rec["image_1"]))
            mask = np.abs(img.astype(int) - skin).sum(-1) < 10
            x0, y0, x1, y1 = m["hands"][m["acting_hand"]]
            hx, hy = m["hand_position"]
            assert x0 <= hx <= x1 and y0 <= hy <= y1
            assert mask[max(0, y0):y1 + 1, max(0, x0):x1 + 1].sum() >= 4
            # in the input frame the hands rest at the bottom edge
            img0 = np.asarray(Image.open(generate_root / "EgoGen/synthego/val" / rec["image_0"]))
            ys = np.nonzero(np.abs(img0.astype(int) - skin).sum(-1) < 10)[0]
            assert ys.min() > 0.75 * img0.shape[0]


def test_acting_hand_follows_the_object_side(tmp_path):
    generate(tmp_path, train=60, val=2, size=48, seed=5, workers=1, progress=False)
    meta = json.loads((tmp_path / "synthego_metadata.json").read_text())
    verbs = set()
    for clip in meta.values():
        for m in clip["actions"].values():
            verbs.add(m["verb"])
            box = clip["objects"][m["target_object"]]["box"]
            centre = (box[0] + box[2]) / 2 / clip["width"]
            if m["verb"] == "cut":
                assert m["acting_hand"] == "right"
            elif abs(centre - 0.5) > 0.08:
                assert m["acting_hand"] == ("left" if centre < 0.5 else "right")
    assert verbs == set(world.VERBS)


def test_sample_grid(synthego_root, tmp_path):
    out = write_grid(synthego_root / "synthego_val.json",
                     synthego_root / "EgoGen/synthego/val", tmp_path / "grid.png", n=4, cell=64)
    img = Image.open(out)
    assert img.size == (5 * 64, 4 * 64)
    arr = np.asarray(img)
    assert arr[:, :64].std() > 10  # frames were pasted, not left blank


def test_grid_with_generated_frames(synthego_root, tmp_path):
    val = synthego_root / "EgoGen/synthego/val"
    records = json.loads((synthego_root / "synthego_val.json").read_text())
    clip = next(iter(records))
    target = records[clip][next(iter(records[clip]))]["image_1"]
    generated = tmp_path / "frames"
    (generated / target).parent.mkdir(parents=True)
    Image.new("RGB", (16, 16), (255, 0, 0)).save(generated / target)  # pure red "generated" frame
    out = write_grid(synthego_root / "synthego_val.json", val, tmp_path / "grid.png", n=1,
                     cell=32, generated=[("LEGO", generated)], description_key="action")
    arr = np.asarray(Image.open(out))
    assert arr.shape == (14 + 32, 6 * 32, 3)  # title strip; input | LEGO | action frame | text
    assert (arr[14:, 32:64] == [255, 0, 0]).all()  # the generated frame in its column
    assert not (arr[14:, :32] == [255, 0, 0]).all()
    with pytest.raises(DataFormatError, match="frame not found"):
        write_grid(synthego_root / "synthego_val.json", val, tmp_path / "grid2.png", n=2,
                   generated=[("LEGO", generated)])  # the second record has no generated frame


def test_wide_frames(tmp_path):
    generate(tmp_path, train=2, val=1, size=36, aspect=16 / 9, seed=0, workers=1, progress=False)
    meta = json.loads((tmp_path / "synthego_metadata.json").read_text())
    assert {(m["height"], m["width"]) for m in meta.values()} == {(36, 64)}
