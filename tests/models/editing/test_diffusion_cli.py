import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lego.cli import LegoCLI, main
from lego.data.records import read_records
from lego.models.editing import InstructPix2PixModule, LegoDiffusionModule
from tests.models.editing.editing_helpers import RandomFeatureReader


def tiny_config(
    shipped: str,
    backbone: Path,
    data_root: Path,
    tmp_path: Path,
    features: Path | None = None,
    features_dim: int | None = None,
) -> Path:
    """The shipped SynthEgo config, shrunk to a few CPU seconds (tiny model, tmp outputs).

    Without ``features`` the VLM conditioning is off (``vlm_dim: null``).
    """
    config = yaml.safe_load(Path(shipped).read_text())
    trainer = config["trainer"]
    trainer.update(
        max_steps=4,
        check_val_every_n_epoch=1,
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
    )
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    for callback in trainer["callbacks"]:
        if callback["class_path"] == "FramesWriter":
            callback["init_args"]["output_dir"] = str(tmp_path / "frames")
            callback["init_args"]["metadata"] = str(data_root / "synthego_metadata.json")
        if callback["class_path"] == "EditMetricsCallback":
            callback["init_args"]["metadata"] = str(data_root / "synthego_metadata.json")
            callback["init_args"]["output_dir"] = str(tmp_path / "metrics")
            if "ground_truth_dir" in callback["init_args"]:
                callback["init_args"]["ground_truth_dir"] = str(
                    data_root / "EgoGen" / "synthego" / "val_gt_for_metric"
                )
    config["model"]["init_args"].update(pretrained=str(backbone), num_inference_steps=3)
    config["data"]["init_args"].update(root=str(data_root), resolution=32, batch_size=8)
    lego = config["model"]["class_path"] == "LegoDiffusionModule"
    data = config["data"]["init_args"]
    if features is None:  # the shipped LEGO config reads the describe stage's outputs: turn off
        data.pop("features", None)
        data.pop("vlm_dim", None)
        if data.pop("records_dir", None) is not None:
            data["description_key"] = "oracle_description"
        if lego:
            config["model"]["init_args"]["vlm_dim"] = None
    else:
        data.update(features=str(features))
        if "records_dir" in data:  # the describe stage's records, with the VLM's descriptions
            data["records_dir"] = str(features / "records")
        config["model"]["init_args"]["vlm_dim"] = features_dim
    path = tmp_path / Path(shipped).name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("shipped", ["configs/synthego/ip2p.yaml", "configs/synthego/lego.yaml"])
def test_fit_then_test_through_the_cli(shipped, synthego_backbone, synthego_root, tmp_path):
    config = tiny_config(shipped, synthego_backbone, synthego_root, tmp_path)
    main(["fit", "--config", str(config)])
    ckpts = sorted((tmp_path / "logs").rglob("last.ckpt"))
    assert len(ckpts) == 1
    checkpoint = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 4
    assert "ema" in checkpoint
    assert any(k.startswith("unet.conv_in") for k in checkpoint["state_dict"])
    cls = InstructPix2PixModule if "ip2p" in shipped else LegoDiffusionModule
    restored = cls.load_from_checkpoint(ckpts[0])
    assert restored.ema is not None and restored.ema.optimization_step == 4
    # the SynthEgo recipe's timestep density reaches the module (and its checkpoint)
    assert (restored.timestep_sampling, restored.timestep_logit_mean) == ("logit_normal", 2.0)
    torch.testing.assert_close(
        restored.unet.conv_in.weight, checkpoint["state_dict"]["unet.conv_in.weight"]
    )
    events = EventAccumulator(str(ckpts[0].parent.parent), size_guidance={"images": 0})
    events.Reload()
    assert {"train/loss", "train/grad_norm", "val/loss"} <= set(events.Tags()["scalars"])
    # the shipped SynthEgo configs score the sampled validation frames: quality curves
    assert {"val/psnr", "val/synthego_hand_hit"} <= set(events.Tags()["scalars"])
    assert "val/grid" in events.Tags()["images"]
    grid = events.Images("val/grid")[0]
    assert (grid.width, grid.height) == (3 * 32, 8 * 32)  # input | generated | target, 8 rows

    main(["test", "--config", str(config), "--ckpt_path", str(ckpts[0])])
    records = read_records(synthego_root / "synthego_val.json")
    metadata = json.loads((synthego_root / "synthego_metadata.json").read_text())
    written = sorted((tmp_path / "frames").rglob("*.png"))
    assert len(written) == len(records) == 8
    for rec in records:
        name = Path(rec.fields["image_1"]).stem + ".png"
        path = tmp_path / "frames" / rec.clip_id / rec.action_id / name
        assert path.is_file(), path
        with Image.open(path) as image:
            # resized back to the clip's aspect ratio at the generated height (32)
            meta = metadata[rec.clip_id]
            assert image.size == (round(32 * meta["width"] / meta["height"]), 32)
            assert image.mode == "RGB"


def cli_with_vlm_dim(config: Path, dim: int) -> LegoCLI:
    """The LEGO config with VLM conditioning of width ``dim`` (not run; the CLI links data's)."""
    args = ["--config", str(config), f"--model.init_args.vlm_dim={dim}"]
    return LegoCLI(args=args, run=False)


def test_lego_with_vlm_features_fits_and_tests(synthego_backbone, synthego_root, tmp_path):
    config = tiny_config("configs/synthego/lego.yaml", synthego_backbone, synthego_root, tmp_path)
    cli = cli_with_vlm_dim(config, 16)
    assert cli.model.hparams.vlm_dim == 16
    assert cli.datamodule.vlm_dim == 16  # linked from the model by the CLI
    cli.datamodule.feature_reader = RandomFeatureReader(16)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 4
    assert cli.model.vlm_conditioner is not None
    results = cli.trainer.test(cli.model, cli.datamodule)
    assert results is not None
    assert len(list((tmp_path / "frames").rglob("*.png"))) == 8


def test_mismatched_features_fail_before_training(synthego_backbone, synthego_root, tmp_path):
    config = tiny_config("configs/synthego/lego.yaml", synthego_backbone, synthego_root, tmp_path)
    cli = cli_with_vlm_dim(config, 16)
    cli.datamodule.feature_reader = RandomFeatureReader(24)
    with pytest.raises(ValueError, match=r"vlm_image has width 24 but .*vlm_dim=16"):
        cli.trainer.fit(cli.model, cli.datamodule)


def test_describe_stage_feeds_lego_through_the_shipped_configs(
    synthego_backbone, synthego_root, tmp_path
):
    """Stages 1-3 chained by the shipped SynthEgo YAMLs: instruct -> describe -> LEGO fit/test."""
    from lego.models.instruct.bootstrap import write_synthego_vlm

    vlm = write_synthego_vlm(tmp_path / "vlm", image_size=32, patch_size=8, vision_hidden=32,
                             text_hidden=64, heads=4)
    data = {"root": str(synthego_root), "resolution": 32, "batch_size": 8}

    instruct = yaml.safe_load(Path("configs/synthego/instruct.yaml").read_text())
    instruct["trainer"].update(max_steps=2, limit_val_batches=0, enable_progress_bar=False,
                               logger=False, enable_checkpointing=False, callbacks=[],
                               default_root_dir=str(tmp_path / "instruct_run"))
    instruct["model"]["init_args"].update(model_name_or_path=str(vlm),
                                          export_dir=str(tmp_path / "instruct"))
    instruct["data"]["init_args"].update(data)
    (tmp_path / "instruct.yaml").write_text(yaml.safe_dump(instruct))
    main(["fit", "--config", str(tmp_path / "instruct.yaml")])

    describe = yaml.safe_load(Path("configs/synthego/describe.yaml").read_text())
    describe["trainer"].update(enable_progress_bar=False,
                               default_root_dir=str(tmp_path / "describe_run"))
    describe["trainer"]["callbacks"][0]["init_args"].update(
        cache_root=str(tmp_path / "features"), records_dir=str(tmp_path / "features" / "records")
    )
    assert describe["trainer"]["callbacks"][1]["class_path"] == "DescriptionMetricsCallback"
    describe["trainer"]["callbacks"][1]["init_args"].update(
        metadata=str(synthego_root / "synthego_metadata.json"),
        output_dir=str(tmp_path / "features"),
    )
    describe["model"]["init_args"].update(
        model_name_or_path=str(tmp_path / "instruct" / "model"), max_new_tokens=6
    )
    describe["data"]["init_args"].update(data)
    (tmp_path / "describe.yaml").write_text(yaml.safe_dump(describe))
    for split in ("train", "val"):
        main(["predict", "--config", str(tmp_path / "describe.yaml"),
              f"--data.init_args.predict_split={split}"])
    assert (tmp_path / "features" / "records" / "synthego_val.json").is_file()
    for split in ("train", "val"):  # the describe stage scored its descriptions
        report = tmp_path / "features" / f"description_metrics_{split}.json"
        report = json.loads(report.read_text())
        assert report["count"] == {"train": 24, "val": 8}[split]
    assert not Path("config.yaml").exists()  # run configs go to the run folders, not the cwd

    config = tiny_config("configs/synthego/lego.yaml", synthego_backbone, synthego_root, tmp_path,
                         features=tmp_path / "features", features_dim=64)
    cli = LegoCLI(args=["--config", str(config)], run=False)
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    assert batch.vlm_image.shape == (8, 16, 64) and batch.vlm_text.shape == (8, 77, 64)
    # validation every 2 epochs (the shipped config: every 10) runs after step 6 and saves a
    # last.ckpt; training goes on to step 7, mid-epoch
    main(["fit", "--config", str(config), "--trainer.check_val_every_n_epoch=2",
          "--trainer.max_steps=7"])
    (ckpt,) = sorted((tmp_path / "logs").rglob("last.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 7  # last.ckpt holds the final weights, not step 6's
    state = saved["state_dict"]
    assert state["vlm_conditioner.projection_img.weight"].shape[1] == 64
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    assert len(list((tmp_path / "frames").rglob("*.png"))) == 8


def test_two_process_ddp_test_writes_the_same_frames_as_one(
    synthego_backbone, synthego_root, tmp_path
):
    """Sampling is seeded per sample: 2 gloo ranks write each frame once, identical to 1 rank."""
    import os
    import subprocess
    import sys

    runs = {}
    for name in ("single", "ddp"):
        (tmp_path / name).mkdir()
        runs[name] = tiny_config("configs/synthego/ip2p.yaml", synthego_backbone, synthego_root,
                                 tmp_path / name)
    main(["test", "--config", str(runs["single"])])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lego", "test", "--config", str(runs["ddp"]),
         "--trainer.strategy=ddp", "--trainer.devices=2"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = sorted(p.relative_to(tmp_path / "single") for p in
                    (tmp_path / "single" / "frames").rglob("*.png"))
    ddp = sorted(p.relative_to(tmp_path / "ddp") for p in
                 (tmp_path / "ddp" / "frames").rglob("*.png"))
    assert len(single) == 8 and ddp == single
    for rel in single:
        with Image.open(tmp_path / "single" / rel) as a, Image.open(tmp_path / "ddp" / rel) as b:
            diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
            assert diff.max() <= 1, rel  # same noise per sample; float summation order aside
    psnr = {n: json.loads((tmp_path / n / "metrics" / "metrics.json").read_text())["metrics"]
            for n in runs}
    assert psnr["ddp"]["psnr"] == pytest.approx(psnr["single"]["psnr"], abs=0.05)
