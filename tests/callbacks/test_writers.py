import numpy as np
import pytest
import torch
from PIL import Image

from lego.batch import GeneratedFrames
from lego.callbacks import FramesWriter, ImageGridCallback
from lego.callbacks.image_grid import grid_rows
from lego.data.io import DataFormatError


def outputs(n=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return GeneratedFrames(
        sample_ids=[f"clip{i}/act{i}" for i in range(n)],
        frames=torch.rand(n, 3, size, size, generator=g),
        image_1=[f"clip{i}/act{i}/frame_0009{i}.jpg" for i in range(n)],
        image_0=[f"clip{i}/act{i}/frame_0000{i}.jpg" for i in range(n)],
        texts=[f"pick up the cup {i}" for i in range(n)],
        input_frames=torch.zeros(n, 3, size, size),
        target_frames=torch.ones(n, 3, size, size),
    )


def test_png_paths_follow_the_target_frame_and_values_round_trip(tmp_path):
    out = outputs()
    writer = FramesWriter(output_dir=tmp_path)
    paths = writer.write_frames(out)
    assert paths == [
        tmp_path / "clip0/act0/frame_00090.png",
        tmp_path / "clip1/act1/frame_00091.png",
    ]
    with Image.open(paths[0]) as image:
        saved = np.asarray(image)
    expected = (out.frames[0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(saved, expected)
    assert not list(tmp_path.rglob(".tmp-*"))


def test_existing_files_are_skipped_unless_overwrite(tmp_path):
    writer = FramesWriter(output_dir=tmp_path)
    writer.write_frames(outputs(seed=0))
    first = (tmp_path / "clip0/act0/frame_00090.png").read_bytes()
    assert writer.write_frames(outputs(seed=1)) == []
    assert writer.skipped == 2
    assert (tmp_path / "clip0/act0/frame_00090.png").read_bytes() == first
    FramesWriter(output_dir=tmp_path, overwrite=True).write_frames(outputs(seed=1))
    assert (tmp_path / "clip0/act0/frame_00090.png").read_bytes() != first


def test_jpeg_format_and_missing_target_name(tmp_path):
    out = outputs(n=1)
    out.image_1 = [None]
    writer = FramesWriter(output_dir=tmp_path, image_format="jpeg", jpeg_quality=75)
    (path,) = writer.write_frames(out)
    assert path == tmp_path / "clip0/act0/frame_00000.jpg"
    with Image.open(path) as image:
        assert image.format == "JPEG"
    with pytest.raises(ValueError, match="not of the form"):
        writer.path_for("../evil", None, "x.jpg")
    with pytest.raises(ValueError, match="jpeg_quality"):
        FramesWriter(output_dir=tmp_path, jpeg_quality=0)


def test_writer_hooks_write_predict_and_test_outputs(tmp_path):
    writer = FramesWriter(output_dir=tmp_path)
    writer.write_on_batch_end(None, None, outputs(n=1), None, None, 0, 0)
    writer.on_test_batch_end(None, None, outputs(n=2, seed=3), None, 0)
    assert writer.written == 2 and writer.skipped == 1
    quiet = FramesWriter(output_dir=tmp_path / "q", write_in_test=False)
    quiet.on_test_batch_end(None, None, outputs(n=1), None, 0)
    assert not (tmp_path / "q").exists()


def test_grid_layout_is_input_generated_target():
    out = outputs(n=3, size=4)
    grid = grid_rows(out, max_samples=2)
    assert grid.shape == (3, 2 * 4, 3 * 4)
    assert torch.equal(grid[:, :4, :4], torch.zeros(3, 4, 4))
    assert torch.equal(grid[:, :4, 4:8], out.frames[0])
    assert torch.equal(grid[:, 4:8, 8:12], torch.ones(3, 4, 4))
    out.target_frames = None
    assert grid_rows(out, 8).shape == (3, 3 * 4, 2 * 4)
    assert ImageGridCallback(max_samples=2).stages == ("validate", "test")


def test_frames_are_resized_to_the_clip_aspect_ratio(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text('{"clip0": {"height": 36, "width": 64}, "clip1": {"height": 10, "width": 10}}')
    writer = FramesWriter(output_dir=tmp_path / "out", metadata=meta, output_height=16)
    paths = writer.write_frames(outputs(n=2, size=8))
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append(image.size)
    assert sizes == [(28, 16), (16, 16)]
    bad = outputs(n=3)
    with pytest.raises(DataFormatError, match=r"meta.json: no entry for clip 'clip2' of sample"):
        writer.write_frames(bad)
    meta.write_text('{"clip0": {"height": "tall"}}')
    lazy = FramesWriter(output_dir=tmp_path, metadata=meta)  # read at the first write
    with pytest.raises(ValueError, match="clip 'clip0' needs integer height and width"):
        lazy.write_frames(outputs(n=1))


def test_minmax_stretch_uses_the_unclamped_output(tmp_path):
    out = outputs(n=1, size=4)
    raw = torch.linspace(-0.5, 1.5, 48).reshape(1, 3, 4, 4)  # decoder output past [0, 1]
    out.raw_frames, out.frames = raw, raw.clamp(0, 1)
    (path,) = FramesWriter(output_dir=tmp_path, stretch="minmax").write_frames(out)
    with Image.open(path) as image:
        saved = np.asarray(image)
    expected = ((raw[0] + 0.5) / 2.0 * 255.0).permute(1, 2, 0).numpy().astype(np.uint8)
    assert np.array_equal(saved, expected)  # the paper's (g - min) / (max - min) * 255, truncated
    assert saved.min() == 0 and saved.max() == 255
    (clamped,) = FramesWriter(output_dir=tmp_path / "c").write_frames(out)
    with Image.open(clamped) as image:
        assert (np.asarray(image) == 255).sum() > (saved == 255).sum()  # clamping saturates
    with pytest.raises(ValueError, match="stretch"):
        FramesWriter(output_dir=tmp_path, stretch="none")


def test_raw_frames_must_match_frames():
    out = outputs(n=2, size=4)
    assert torch.equal(out.unclamped(1), out.frames[1])  # no raw output: the frames themselves
    with pytest.raises(ValueError, match="raw_frames"):
        GeneratedFrames(sample_ids=out.sample_ids, frames=out.frames, image_1=out.image_1,
                        image_0=out.image_0, texts=out.texts, raw_frames=out.frames[:1])


def test_a_folder_holds_one_runs_frames(synthego_backbone, synthego_root, tmp_path):
    """Re-running test resumes the same run; another model's run sets the old frames aside."""
    import json

    import yaml

    from lego.cli import main
    from tests.models.editing.test_diffusion_cli import tiny_config

    config = tiny_config("configs/synthego/sdedit.yaml", synthego_backbone, synthego_root,
                         tmp_path)
    frames = tmp_path / "frames"

    def run(strength: float) -> dict:
        data = yaml.safe_load(config.read_text())
        data["model"]["init_args"]["strength"] = strength
        config.write_text(yaml.safe_dump(data))
        main(["test", "--config", str(config)])
        return {p.relative_to(frames): p.read_bytes() for p in frames.rglob("*.png")}

    first = run(0.4)
    assert len(first) == 8
    stamp = {p: p.stat().st_mtime_ns for p in frames.rglob("*.png")}
    assert run(0.4) == first  # the same run again: its files are kept (a killed test resumes)
    assert {p: p.stat().st_mtime_ns for p in frames.rglob("*.png")} == stamp
    second = run(1.0)  # another model: its own frames, the first run's moved aside
    assert len(second) == 8 and second != first
    aside = tmp_path / "frames.previous"
    assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*.png")} == first
    manifest = json.loads((frames / "frames.json").read_text())
    assert manifest["generator"]["hparams"]["strength"] == 1.0
