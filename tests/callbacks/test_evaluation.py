import json

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lego.callbacks import EditMetricsCallback
from lego.data import SynthEgoDataModule
from lego.data.records import read_records
from lego.models.editing.copy_input import CopyInputGenerator
from tests.metrics.tiny_weights import write_metric_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_metric_weights(tmp_path_factory.mktemp("weights"), lpips_nets=("alex",),
                                blip=False)


def _datamodule(root):
    return SynthEgoDataModule(root=root, resolution=32, batch_size=3, num_workers=0,
                              flip_prob=0.0, description_key="oracle_description")


def _direct_psnr(root):
    base = root / "EgoGen" / "synthego"
    values = []
    for rec in read_records(root / "synthego_val.json"):
        a = np.asarray(Image.open(base / "val" / rec.fields["image_0"]).convert("RGB"), float)
        b = np.asarray(Image.open(base / "val_gt_for_metric" / rec.fields["image_1"]).convert(
            "RGB"), float)
        values.append(10 * np.log10(255.0**2 / ((a - b) ** 2).mean()))
    return float(np.mean(values))


def _run(tmp_path, root, callback):
    logger = TensorBoardLogger(tmp_path / "logs", name="eval")
    trainer = Trainer(accelerator="cpu", devices=1, logger=logger, callbacks=[callback],
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.test(CopyInputGenerator(), datamodule=_datamodule(root))
    return trainer, logger


def test_callback_logs_to_tensorboard_and_writes_metrics_json(tmp_path, synthego_root, weights):
    gt_dir = synthego_root / "EgoGen" / "synthego" / "val_gt_for_metric"
    callback = EditMetricsCallback(
        metrics=["psnr", "lpips_alex", "egovlp", "egovlp_plus", "synthego"],
        weights_dir=weights, protocol="clean", dataset="synthego",
        metadata=synthego_root / "synthego_metadata.json", ground_truth_dir=gt_dir,
    )
    trainer, logger = _run(tmp_path, synthego_root, callback)
    report = json.loads((tmp_path / "logs" / "eval" / "version_0" / "metrics.json").read_text())
    assert report["protocol"]["name"] == "clean"
    assert report["samples_scored_rank0"] == 8
    assert report["issues"]["size_mismatch"] == []
    metrics = report["metrics"]
    assert set(metrics) == {"psnr", "lpips_alex", "egovlp", "egovlp_plus",
                            "synthego_hand_error", "synthego_hand_hit"}
    assert metrics["psnr"] == pytest.approx(_direct_psnr(synthego_root), abs=1e-3)
    assert metrics["synthego_hand_hit"] <= 25.0  # copying the input puts no hand at the object
    acc = EventAccumulator(logger.log_dir)
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for name, value in metrics.items():
        assert f"test/{name}" in tags
        assert acc.Scalars(f"test/{name}")[-1].value == pytest.approx(value, rel=1e-5)
    assert trainer.callback_metrics["test/psnr"].item() == pytest.approx(metrics["psnr"], rel=1e-5)


def test_official_protocol_and_skipped_metrics(tmp_path, synthego_root, weights):
    callback = EditMetricsCallback(
        metrics=["psnr", "clip", "blip_base"], weights_dir=weights, protocol="official",
        metadata=synthego_root / "synthego_metadata.json", output_dir=tmp_path / "out",
    )
    with pytest.warns(UserWarning, match="metric 'blip_base' skipped"):
        _run(tmp_path, synthego_root, callback)
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["protocol"]["stretch"] == "minmax"
    assert set(report["metrics"]) == {"psnr", "clip"}
    assert "blip-image-captioning-base" in report["skipped"]["blip_base"]
    # official: min-max stretch + JPEG, at 256 x 256 (metadata 32 x 32): not the clean value
    assert report["metrics"]["psnr"] != pytest.approx(_direct_psnr(synthego_root), abs=0.01)


def test_official_scoring_inside_test_says_where_it_differs(tmp_path, synthego_root, weights):
    callback = EditMetricsCallback(
        metrics=["psnr", "fid", "egovlp_plus"], weights_dir=weights, protocol="official",
        dataset="synthego", metadata=synthego_root / "synthego_metadata.json",
        output_dir=tmp_path / "out",
    )
    with pytest.warns(UserWarning, match="FID is computed over the scored pairs") as caught:
        _run(tmp_path, synthego_root, callback)
    assert any("EgoVLP+ reads its context frames from the batch" in str(w.message)
               for w in caught)
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["protocol"]["fid_sets"] == "folders"  # what the protocol asks for ...
    assert report["fid_sets_used"] == "pairs" and report["context_frames"] == "batch"  # ... and did
    assert len(report["deviations_from_protocol"]) == 2
    clean = EditMetricsCallback(metrics=["psnr", "fid"], protocol="clean")
    assert clean.deviations() == []
    with_inputs = EditMetricsCallback(metrics=["egovlp_plus"], protocol="official",
                                      inputs_dir=tmp_path)
    assert with_inputs.deviations() == []


def test_non_generated_outputs_are_ignored(tmp_path):
    callback = EditMetricsCallback(metrics=["psnr"])
    callback._on_batch_end(torch.nn.Linear(1, 1), {"loss": torch.tensor(1.0)})
    assert callback.suite is None


def test_configured_in_yaml_by_short_name(tmp_path, synthego_root):
    from lego.cli import main

    config = tmp_path / "eval.yaml"
    config.write_text(f"""
trainer:
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: {tmp_path / 'logs'}, name: yaml}}
  callbacks:
    - class_path: EditMetricsCallback
      init_args:
        metrics: [psnr, synthego]
        protocol: official
        dataset: synthego
        metadata: {synthego_root / 'synthego_metadata.json'}
        ground_truth_dir: {synthego_root / 'EgoGen/synthego/val_gt_for_metric'}
model:
  class_path: CopyInputGenerator
data:
  class_path: SynthEgoDataModule
  init_args: {{root: {synthego_root}, resolution: 32, batch_size: 4, num_workers: 0,
              flip_prob: 0.0}}
""")
    main(["test", "--config", str(config)])
    report = json.loads((tmp_path / "logs" / "yaml" / "version_0" / "metrics.json").read_text())
    assert report["protocol"]["name"] == "official"
    assert set(report["metrics"]) == {"psnr", "synthego_hand_error", "synthego_hand_hit"}
    assert report["metadata"].endswith("synthego_metadata.json")


@pytest.mark.parametrize("protocol", ["clean", "official"])
def test_written_frames_rescore_to_the_same_values(tmp_path, synthego_root, weights, protocol):
    from lego import tools

    gt_dir = synthego_root / "EgoGen" / "synthego" / "val_gt_for_metric"
    records = tmp_path / "records.json"
    data = json.loads((synthego_root / "synthego_val.json").read_text())
    for clip in data.values():
        for rec in clip.values():
            rec["llava_forecast_finetune"] = rec["oracle_description"]
    records.write_text(json.dumps(data))
    metrics = ["psnr", "lpips_alex", "clip", "egovlp", "synthego"]
    callback = EditMetricsCallback(
        metrics=metrics, weights_dir=weights, protocol=protocol, dataset="synthego",
        metadata=synthego_root / "synthego_metadata.json", ground_truth_dir=gt_dir,
        records=records, output_dir=tmp_path / "cb", frames_dir=tmp_path / "frames",
    )
    _run(tmp_path, synthego_root, callback)
    assert len(callback.descriptions) == 8
    written = sorted((tmp_path / "frames").rglob("*.*"))
    assert len(written) == 8
    assert {p.suffix for p in written} == ({".png"} if protocol == "clean" else {".jpg"})
    code = tools.run_tool("evaluate", [
        "--generated", str(tmp_path / "frames"), "--ground-truth", str(gt_dir),
        "--records", str(synthego_root / "synthego_val.json"), "--weights", str(weights),
        "--metadata", str(synthego_root / "synthego_metadata.json"), "--protocol", protocol,
        "--dataset", "synthego", "--metrics", *metrics, "--no-progress", "--device", "cpu",
        "--output", str(tmp_path / "tool.json"), "--strict"])
    assert code == 0
    from_callback = json.loads((tmp_path / "cb" / "metrics.json").read_text())["metrics"]
    from_tool = json.loads((tmp_path / "tool.json").read_text())["metrics"]
    assert from_tool == pytest.approx(from_callback, rel=1e-5, abs=1e-5)


def test_unknown_metric_name_fails_at_parse_time(synthego_root):
    from lego.cli import LegoCLI

    with pytest.raises(SystemExit):
        LegoCLI(args=["--model=CopyInputGenerator", "--data=SynthEgoDataModule",
                      f"--data.root={synthego_root}", "--trainer.callbacks+=EditMetricsCallback",
                      "--trainer.callbacks.metrics=[psnr,ssim]"], run=False)
    cli = LegoCLI(args=["--model=CopyInputGenerator", "--data=SynthEgoDataModule",
                        f"--data.root={synthego_root}",
                        "--trainer.callbacks+=EditMetricsCallback",
                        "--trainer.callbacks.metrics=[psnr,fid]",
                        "--trainer.callbacks.protocol=official"], run=False)
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, EditMetricsCallback))
    assert callback.metric_names == ["psnr", "fid"] and callback.protocol_name == "official"


def _test_loader(root):
    dm = _datamodule(root)
    dm.setup("test")
    return dm.test_dataloader()


class _OvershootGenerator(CopyInputGenerator):
    """Returns the input frame stretched past [0, 1], as an unclamped decoder output can be."""

    def generate(self, batch):
        return super().generate(batch) * 1.6 - 0.3


def test_official_protocol_stretches_the_unclamped_output(tmp_path, synthego_root, weights):
    scores = {}
    for name, model in [("copy", CopyInputGenerator()), ("overshoot", _OvershootGenerator())]:
        callback = EditMetricsCallback(metrics=["psnr"], weights_dir=weights,
                                       protocol="official", output_dir=tmp_path / name)
        trainer = Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[callback],
                          enable_progress_bar=False, enable_model_summary=False)
        trainer.test(model, datamodule=_datamodule(synthego_root))
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]
    # min-max undoes any affine map of the raw output: same score as the unstretched frames.
    # Had the callback seen the clamped frames (saturated at 0 and 1) the scores would differ.
    assert scores["overshoot"]["psnr"] == pytest.approx(scores["copy"]["psnr"], abs=1e-4)
    # and the raw values do leave [0, 1] on this data, so clamping would have changed them
    batch = next(iter(_test_loader(synthego_root)))
    raw = _OvershootGenerator().generate(batch)
    assert raw.min() < 0 and raw.max() > 1
