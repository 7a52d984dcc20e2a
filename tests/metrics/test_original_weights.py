import shutil

import pytest
import torch

from lego import tools
from lego.metrics.blip import BLIPCaptionSimilarity
from lego.metrics.clip_similarity import CLIPImageSimilarity
from lego.metrics.convert import convert_to_dir
from lego.metrics.suite import EditMetricSuite, ScoredPair
from lego.metrics.weights import (
    MissingWeightsError,
    find_weight,
    require_weight,
    weight_form,
)
from tests.metrics.tiny_original import write_original_clip, write_original_metric_weights

DESCRIPTIONS = ["the man picks up the red cup", "the left hand cuts the bread",
                "a woman opens the box"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    return write_original_metric_weights(tmp_path_factory.mktemp("lego-metrics"))


def _frames(seed, n=3, size=(40, 56)):
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_clip_metric_from_the_original_file_equals_the_transformers_dir(original, tmp_path):
    archive = original / "metrics" / "ViT-L-14.pt"
    plain = tmp_path / "ViT-L-14-state.pt"
    write_original_clip(plain, torchscript=False, width=64)  # same seed, same float16 values
    converted = convert_to_dir("clip", archive, tmp_path / "clip-vit-large-patch14")
    a, b = _frames(0), _frames(1)
    values = []
    for source in (archive, plain, converted):
        metric = CLIPImageSimilarity(source)
        assert metric.image_size == 32
        metric.update(a, b)
        values.append(metric.compute().item())
    assert values[0] == pytest.approx(values[2], rel=1e-6, abs=1e-5)
    assert values[1] == pytest.approx(values[2], rel=1e-6, abs=1e-5)
    assert abs(values[0]) < 99.9  # different frames are not scored as identical
    same = CLIPImageSimilarity(archive)
    same.update(a, a)
    assert same.compute().item() == pytest.approx(100, abs=1e-3)


def test_blip_metric_from_the_original_file_equals_the_transformers_dir(original, tmp_path):
    egovlp = original / "metrics" / "egovlp" / "pretrained"
    tok_dir = egovlp / "distilbert-base-uncased"
    pth = original / "metrics" / "blip" / "pretrained" / "model_base_caption_capfilt_large.pth"
    converted = convert_to_dir("blip", pth, tmp_path / "blip-image-captioning-base", tok_dir)
    frames = _frames(2)
    metrics = [BLIPCaptionSimilarity(src, egovlp / "egovlp.pth", tok_dir)
               for src in (pth, converted)]
    for metric in metrics:
        assert metric.processor.image_processor.size == {"height": 32, "width": 32}
        metric.update(frames, DESCRIPTIONS)
    assert metrics[0].captions == metrics[1].captions
    assert all(c and not c.startswith("a picture of") for c in metrics[0].captions)
    assert metrics[0].compute().item() == pytest.approx(metrics[1].compute().item(), rel=1e-6)


def test_weights_accept_both_forms_and_prefer_the_directory(original, tmp_path):
    root = tmp_path / "w"
    shutil.copytree(original, root)
    clip = find_weight(root, "clip")
    assert clip == root / "metrics" / "ViT-L-14.pt" and weight_form(clip) == "original file"
    assert find_weight(root, "blip_large").name == "model_large_caption.pth"
    convert_to_dir("clip", clip, root / "clip-vit-large-patch14")
    assert find_weight(root, "clip") == root / "clip-vit-large-patch14"
    assert weight_form(find_weight(root, "clip")) == "transformers dir"
    with pytest.raises(MissingWeightsError,
                       match=r"blip-image-captioning-base .*or the original file "
                       r".*model_base_caption_capfilt_large\.pth"):
        require_weight(tmp_path / "empty", "blip_base")


def test_weights_command_reports_the_form_and_converts(original, tmp_path, capsys):
    root = tmp_path / "w"
    shutil.copytree(original, root)
    keys = ["clip", "blip_base", "blip_large"]
    assert tools.run_tool("weights", ["--dir", str(root), "--only", *keys]) == 0
    out = capsys.readouterr().out
    assert f"clip          ok       {root / 'metrics' / 'ViT-L-14.pt'} [original file]" in out
    assert out.count("[original file]") == 3
    assert tools.run_tool("weights", ["--dir", str(root), "--only", *keys, "--convert"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("[transformers dir]") == 3
    assert "blip_base: converted to" in captured.err
    for name in ("clip-vit-large-patch14", "blip-image-captioning-base",
                 "blip-image-captioning-large"):
        assert (root / name / "config.json").is_file()
    assert tools.run_tool("weights", ["--dir", str(tmp_path / "none"), "--only", "clip"]) == 1
    assert "or the original file" in capsys.readouterr().out
    bare = tmp_path / "bare"
    shutil.copytree(original / "metrics" / "blip", bare)  # no tokenizer directory next to it
    assert tools.run_tool("weights", ["--dir", str(bare), "--only", "blip_base", "--convert"]) == 0
    captured = capsys.readouterr()
    assert "blip_base: conversion failed (BLIP needs the uncased BERT vocabulary" in captured.err
    assert "[original file]" in captured.out


def test_suite_scores_clip_and_blip_from_the_original_files(original):
    suite = EditMetricSuite(["clip", "blip_base", "blip_large"], weights_dir=original)
    assert suite.skipped == {}
    assert suite.weights_used["clip"].endswith("metrics/ViT-L-14.pt")
    assert suite.weights_used["blip_large"].endswith("blip/pretrained/model_large_caption.pth")
    gen, tgt = _frames(3), _frames(4)
    suite.update([ScoredPair(f"c{i}/a0", gen[i], tgt[i], description=DESCRIPTIONS[i])
                  for i in range(3)])
    results = suite.compute()
    direct = CLIPImageSimilarity(original / "metrics" / "ViT-L-14.pt")
    direct.update(gen, tgt)
    assert results["clip"] == pytest.approx(direct.compute().item(), rel=1e-5)
    assert -100 <= results["blip_base"] <= 100 and -100 <= results["blip_large"] <= 100
    assert len(suite.captions()["blip_large"]) == 3
