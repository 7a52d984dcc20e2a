import importlib.metadata
import json
import math

import pytest
import torch

from lego.metrics.suite import PAPER_METRICS, EditMetricSuite, ScoredPair, markdown_table
from lego.metrics.weights import MissingWeightsError, find_weight, require_weight


def _pairs(n=4, seed=0, size=(40, 56)):
    g = torch.Generator().manual_seed(seed)
    return [ScoredPair(f"clip{i}/a0", torch.rand(3, *size, generator=g),
                       torch.rand(3, *size, generator=g), torch.rand(3, *size, generator=g),
                       "the man picks up the red cup") for i in range(n)]


def test_full_suite_with_tiny_weights(metric_weights):
    suite = EditMetricSuite(weights_dir=metric_weights, protocol="official")
    assert suite.names == list(PAPER_METRICS) and suite.skipped == {}
    suite.update(_pairs())
    results = suite.compute()
    assert list(results) == list(PAPER_METRICS)
    assert all(math.isfinite(v) for v in results.values())
    assert -100 <= results["egovlp"] <= 100 and results["fid"] >= 0 and results["psnr"] > 0
    report = suite.report(results)
    assert report["protocol"]["name"] == "official" and report["protocol"]["lpips_input"] == "unit"
    assert report["versions"]["torch"] == importlib.metadata.version("torch")
    assert {"torchmetrics", "transformers", "lpips", "torchvision"} <= set(report["versions"])
    assert report["weights"]["egovlp_ego4d"].endswith("egovlp/pretrained/egovlp.pth")
    assert report["weights"]["inception"].endswith("pt_inception-2015-12-05-6726825d.pth")
    json.dumps(report)
    assert len(suite.captions()["blip_base"]) == 4
    assert "| egovlp |" in markdown_table(results)


def test_identical_frames_give_the_ideal_values(metric_weights):
    suite = EditMetricSuite(["egovlp", "egovlp_plus", "clip", "lpips_alex", "psnr"],
                            weights_dir=metric_weights)
    pairs = [ScoredPair(p.sample_id, p.target, p.target, p.context) for p in _pairs()]
    suite.update(pairs)
    r = suite.compute()
    assert r["egovlp"] == pytest.approx(100, abs=1e-3)
    assert r["egovlp_plus"] == pytest.approx(100, abs=1e-3)
    assert r["clip"] == pytest.approx(100, abs=1e-3)
    assert r["lpips_alex"] == pytest.approx(0, abs=1e-4)
    assert r["psnr"] == math.inf


def test_epic_uses_the_sixteen_frame_checkpoint(metric_weights):
    suite = EditMetricSuite(["egovlp"], weights_dir=metric_weights, dataset="epickitchen")
    assert suite.metrics["egovlp"].num_frames == 16
    assert suite.weights_used["egovlp_epic"].endswith("epic_mir_plus.pth")


def test_missing_weights_skip_the_metric_with_one_warning(tmp_path):
    messages = []
    suite = EditMetricSuite(["psnr", "fid", "lpips_vgg", "egovlp"], weights_dir=tmp_path,
                            warn=messages.append)
    assert suite.names == ["psnr"]
    assert set(suite.skipped) == {"fid", "lpips_vgg", "egovlp"}
    assert len(messages) == 3
    fid_msg = next(m for m in messages if "'fid'" in m)
    assert "pt_inception-2015-12-05-6726825d.pth" in fid_msg and str(tmp_path) in fid_msg
    assert "vgg16-397923af.pth" in suite.skipped["lpips_vgg"]
    with pytest.warns(UserWarning, match="metric 'egovlp' skipped: missing file 'egovlp.pth'"):
        EditMetricSuite(["egovlp"], weights_dir=tmp_path)
    suite.update(_pairs(2))
    assert set(suite.compute()) == {"psnr"}  # absent metrics are never reported as zero


def test_size_mismatch_and_missing_inputs_are_reported(metric_weights):
    suite = EditMetricSuite(["psnr", "egovlp_plus", "blip_base"], weights_dir=metric_weights)
    pairs = _pairs(3)
    pairs[0].generated = torch.rand(3, 20, 28)
    pairs[1].context = None
    pairs[2].description = None
    suite.update(pairs)
    assert suite.issues.size_mismatch == ["clip0/a0"]
    assert suite.issues.missing_context == ["clip1/a0"]
    assert suite.issues.missing_description == ["clip2/a0"]
    assert suite.metrics["egovlp_plus"].count.item() == 2
    assert suite.metrics["blip_base"].count.item() == 2


def test_weights_are_found_in_either_layout(tmp_path):
    (tmp_path / "metrics" / "egovlp" / "pretrained").mkdir(parents=True)
    (tmp_path / "metrics" / "egovlp" / "pretrained" / "egovlp.pth").write_bytes(b"x")
    snapshot = tmp_path / "hub" / "models--openai--clip-vit-large-patch14" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--openai--clip" / "snapshots" / "x").mkdir(parents=True)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "vgg16-397923af.pth").write_bytes(b"x")
    assert find_weight(tmp_path, "egovlp_ego4d").parts[-4:] == (
        "metrics", "egovlp", "pretrained", "egovlp.pth")
    assert find_weight(tmp_path, "vgg").name == "vgg16-397923af.pth"
    assert find_weight(tmp_path, "clip") == snapshot  # an HF cache of the model
    assert find_weight(tmp_path, "distilbert") is None
    with pytest.raises(MissingWeightsError, match="'distilbert-base-uncased'.*HF distilbert"):
        require_weight(tmp_path, "distilbert")
    with pytest.raises(ValueError, match="unknown metrics"):
        EditMetricSuite(["psnr", "ssim"])
