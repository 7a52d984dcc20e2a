import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lego import tools
from lego.data.records import read_records
from tests.metrics.tiny_weights import write_metric_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_metric_weights(tmp_path_factory.mktemp("weights"), lpips_nets=("alex",))


def _layout(tmp_path, root, broken=True):
    """Generated folder = the input frames saved under the ground-truth names (copy baseline)."""
    base = root / "EgoGen" / "synthego"
    generated = tmp_path / "run" / "images"
    records = read_records(root / "synthego_val.json")
    for rec in records:
        out = generated / rec.fields["image_1"]
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / "val" / rec.fields["image_0"], out)
    ids = [r.sample_id for r in records]
    if broken:
        (generated / records[0].fields["image_1"]).unlink()
        (generated / records[1].fields["image_1"]).write_bytes(b"not an image")
        img = Image.open(generated / records[2].fields["image_1"])
        img.resize((20, 20)).save(generated / records[2].fields["image_1"])
    return generated, base, ids


def _argv(generated, base, root, weights, *extra):
    return ["--generated", str(generated), "--ground-truth", str(base / "val_gt_for_metric"),
            "--records", str(root / "synthego_val.json"), "--inputs", str(base / "val"),
            "--metadata", str(root / "synthego_metadata.json"), "--weights", str(weights),
            "--dataset", "synthego", "--no-progress", "--device", "cpu", *extra]


def test_scores_folders_and_reports_bad_input_by_id(tmp_path, synthego_root, weights, capsys):
    generated, base, ids = _layout(tmp_path, synthego_root)
    code = tools.run_tool("evaluate", _argv(
        generated, base, synthego_root, weights, "--metrics", "psnr", "lpips_alex", "fid",
        "egovlp_plus", "clip", "blip_base", "synthego", "--description-key",
        "oracle_description"))
    assert code == 0
    out, err = capsys.readouterr()
    assert "| psnr |" in out and "6 of 8 samples scored" in out
    assert f"missing generated: 1 ({ids[0]})" in err
    assert f"unreadable: 1 ({ids[1]})" in err
    assert f"size mismatch: 1 ({ids[2]})" in err
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["problems"]["missing_generated"] == [ids[0]]
    assert report["problems"]["unreadable"] == [ids[1]]
    assert report["issues"]["size_mismatch"] == [ids[2]]
    assert report["protocol"]["name"] == "clean" and report["scored"] == 6
    assert set(report["metrics"]) == {"psnr", "lpips_alex", "fid", "egovlp_plus", "clip",
                                      "blip_base", "synthego_hand_error", "synthego_hand_hit"}
    assert len(report["captions"]["blip_base"]) == 6
    # PSNR of the 6 scored pairs, directly; the mis-sized one resized bilinearly (as the suite)
    records = read_records(synthego_root / "synthego_val.json")
    values = []
    for rec in records[2:]:
        a = torch.from_numpy(np.array(Image.open(generated / rec.fields["image_1"]).convert(
            "RGB"), dtype=np.float32)).permute(2, 0, 1) / 255
        b = torch.from_numpy(np.array(Image.open(base / "val_gt_for_metric" / rec.fields[
            "image_1"]).convert("RGB"), dtype=np.float32)).permute(2, 0, 1) / 255
        if a.shape != b.shape:
            a = F.interpolate(a[None], size=b.shape[-2:], mode="bilinear")[0].clamp(0, 1)
        values.append(10 * torch.log10(1 / ((a - b) ** 2).mean()).item())
    assert report["metrics"]["psnr"] == pytest.approx(np.mean(values), abs=1e-4)


def test_strict_turns_bad_input_into_an_error(tmp_path, synthego_root, weights, capsys):
    generated, base, _ = _layout(tmp_path, synthego_root)
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights,
                                            "--metrics", "psnr", "--strict"))
    assert code == 1
    assert "bad input (--strict)" in capsys.readouterr().err
    assert not (generated.parent / "metrics.json").exists()  # a refused run writes no result


def test_zero_scorable_pairs_is_one_clear_error(tmp_path, synthego_root, weights, capsys):
    generated, base, ids = _layout(tmp_path, synthego_root, broken=False)
    shutil.rmtree(generated)
    generated.mkdir()
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights,
                                            "--metrics", "psnr"))
    assert code == 1
    err = capsys.readouterr().err
    assert f"0 of {len(ids)} samples scored" in err and f"missing generated: {len(ids)}" in err
    assert not (generated.parent / "metrics.json").exists()


def test_a_result_that_cannot_be_written_is_printed(tmp_path, synthego_root, weights, capsys):
    generated, base, _ = _layout(tmp_path, synthego_root, broken=False)
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights,
                                            "--metrics", "psnr", "--output",
                                            str(blocked / "metrics.json")))
    assert code == 1
    captured = capsys.readouterr()
    assert "psnr" in captured.out[: captured.out.index("{")]  # the table came first
    assert f"cannot write {blocked / 'metrics.json'}" in captured.err
    printed = json.loads(captured.out[captured.out.index("{"):])
    assert printed["metrics"]["psnr"] > 10


def test_official_fid_uses_whole_folders(tmp_path, synthego_root, weights):
    generated, base, _ = _layout(tmp_path, synthego_root, broken=False)
    extra = generated / "extra" / "a0" / "x.png"
    extra.parent.mkdir(parents=True)
    Image.new("RGB", (32, 32), (10, 20, 30)).save(extra)
    Image.new("RGB", (64, 32), (0, 0, 0)).save(generated / "grid.png")  # not a frame
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights,
                                            "--metrics", "fid", "psnr", "--protocol", "official",
                                            "--output", str(tmp_path / "m.json")))
    assert code == 0
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["fid_images"] == {"real": 8, "generated": 9}  # the unpaired frame counts
    assert report["fid_ignored"] == {str(generated): ["grid.png"]}
    assert report["protocol"]["fid_sets"] == "folders"
    assert report["metrics"]["fid"] >= 0


def test_missing_weights_and_folders_are_reported(tmp_path, synthego_root, capsys):
    generated, base, _ = _layout(tmp_path, synthego_root, broken=False)
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, tmp_path / "none",
                                            "--metrics", "psnr", "egovlp"))
    assert code == 0
    captured = capsys.readouterr()
    assert "metric 'egovlp' skipped: missing file 'egovlp.pth'" in captured.err
    assert "| psnr |" in captured.out and "| egovlp |" not in captured.out
    code = tools.run_tool("evaluate", _argv(tmp_path / "absent", base, synthego_root,
                                            tmp_path / "none"))
    assert code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        tools.run_tool("evaluate", ["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--ground-truth" in out and "--strict" in out and "official" in out
    assert "evaluate" in tools.discover()


def test_weights_command_reports_found_and_missing_files(tmp_path, weights, capsys):
    present = ["egovlp_ego4d", "egovlp_epic", "distilbert", "clip", "inception", "alex",
               "blip_base", "blip_large"]  # the fixture has no vgg / squeeze trunk
    assert tools.run_tool("weights", ["--dir", str(weights), "--only", *present]) == 0
    out = capsys.readouterr().out
    assert "egovlp_ego4d  ok" in out and "alex          ok" in out
    assert tools.run_tool("weights", ["--dir", str(tmp_path), "--only", "inception", "vgg"]) == 1
    captured = capsys.readouterr()
    assert (f"inception     MISSING  file pt_inception-2015-12-05-6726825d.pth: put it at "
            f"{tmp_path / 'pt_inception-2015-12-05-6726825d.pth'}") in captured.out
    assert "download.pytorch.org/models/vgg16-397923af.pth" in captured.out
    assert "2 of 2 weights missing" in captured.err


def test_weights_download_failure_is_reported(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = tools.run_tool("weights", ["--dir", str(tmp_path), "--only", "distilbert",
                                      "--download"])
    assert code == 1
    captured = capsys.readouterr()
    assert "distilbert: download failed" in captured.err
    assert "MISSING  model directory distilbert-base-uncased" in captured.out


def test_official_protocol_warns_about_frames_not_written_as_the_papers(
        tmp_path, synthego_root, weights, capsys):
    generated, base, ids = _layout(tmp_path, synthego_root, broken=False)
    records = read_records(synthego_root / "synthego_val.json")
    # one frame written as the paper's inference does: stretched to 0..255, JPEG q75
    first = generated / records[0].fields["image_1"]
    pixels = np.asarray(Image.open(first).convert("RGB"), dtype=np.float32)
    pixels = (pixels - pixels.min()) / (pixels.max() - pixels.min()) * 255
    first.unlink()
    Image.fromarray(pixels.astype(np.uint8)).save(first.with_suffix(".jpg"), quality=75)
    code = tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights,
                                            "--metrics", "psnr", "--protocol", "official",
                                            "--output", str(tmp_path / "m.json")))
    assert code == 0
    err = capsys.readouterr().err
    assert "7 generated frame(s) are PNG" in err and ids[1] in err
    report = json.loads((tmp_path / "m.json").read_text())
    assert ids[0] not in report["not_official_files"]["png"]
    assert ids[0] not in report["not_official_files"]["not_stretched"]
    assert len(report["not_official_files"]["png"]) == 7
    # copies of SynthEgo input frames do not span 0..255 (a table, not a stretched frame)
    assert set(report["not_official_files"]["not_stretched"]) <= set(ids[1:])
    # the clean protocol makes no such claim
    tools.run_tool("evaluate", _argv(generated, base, synthego_root, weights, "--metrics", "psnr",
                                     "--output", str(tmp_path / "c.json")))
    assert "not_official_files" not in json.loads((tmp_path / "c.json").read_text())
    assert "generated frame(s) are PNG" not in capsys.readouterr().err


def test_metadata_of_another_dataset_is_refused_and_a_missing_clip_listed(
    tmp_path, synthego_root, weights, capsys
):
    generated, base, ids = _layout(tmp_path, synthego_root, broken=False)
    other = tmp_path / "ego4d_metadata.json"
    other.write_text(json.dumps({"an-ego4d-clip": {"height": 1080, "width": 1920}}))
    argv = _argv(generated, base, synthego_root, weights, "--metrics", "psnr", "synthego")
    at = argv.index("--metadata") + 1
    code = tools.run_tool("evaluate", [*argv[:at], str(other), *argv[at + 1:]])
    assert code == 2
    err = capsys.readouterr().err
    assert "ego4d_metadata.json: none of the" in err and "another dataset's metadata" in err

    meta = json.loads((synthego_root / "synthego_metadata.json").read_text())
    first_clip = ids[0].split("/")[0]
    del meta[first_clip]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(meta))
    code = tools.run_tool("evaluate", [*argv[:at], str(partial), *argv[at + 1:],
                                       "--output", str(tmp_path / "m.json")])
    assert code == 0
    report = json.loads((tmp_path / "m.json").read_text())
    missing = report["problems"]["missing_metadata"]
    assert missing and all(sid.startswith(first_clip + "/") for sid in missing)
    assert report["scored"] == len(ids) - len(missing)
