import json
import re
from pathlib import Path

import pytest
import yaml

from lego.cli import LegoCLI, main

CONFIGS = sorted(Path("configs").rglob("*.yaml"))
COMMAND = re.compile(r"python -m lego (fit|validate|test|predict) --config")


def command_of(path: Path) -> str:
    """The Lightning command a config is meant for (its 'Usage:' comment), default fit."""
    match = COMMAND.search(path.read_text())
    return match.group(1) if match else "fit"


def test_help_lists_lightning_commands_and_tools(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "synthego"):
        assert re.search(rf"^  {name}\s", out, re.M), name


@pytest.mark.parametrize("command", ["fit", "test", "predict"])
def test_lightning_command_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out


def test_tool_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synthego", "--help"])
    assert exit_info.value.code == 0
    assert "--train" in capsys.readouterr().out


def test_unknown_command_fails_clearly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("config", CONFIGS, ids=[p.as_posix() for p in CONFIGS])
def test_every_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command_of(config), "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("lego.")
    assert printed["data"]["class_path"].startswith("lego.")


def test_short_class_names_resolve_and_default_logger_is_tensorboard(synthego_root, tmp_path):
    cli = LegoCLI(
        args=["--model=CopyInputGenerator", "--data=SynthEgoDataModule",
              f"--data.root={synthego_root}"],
        run=False,
    )
    assert type(cli.model).__name__ == "CopyInputGenerator"
    assert type(cli.datamodule).__name__ == "SynthEgoDataModule"
    assert type(cli.trainer.logger).__name__ == "TensorBoardLogger"


def copy_input_config(data_root: Path, tmp_path: Path, resolution: int = 32) -> Path:
    """The shipped copy-input config on the test dataset, every output under ``tmp_path``."""
    config = yaml.safe_load(Path("configs/synthego/copy_input.yaml").read_text())
    trainer = config["trainer"]
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    trainer["enable_progress_bar"] = False
    for callback in trainer["callbacks"]:
        args = callback["init_args"]
        if callback["class_path"] == "FramesWriter":
            args["metadata"] = str(data_root / "synthego_metadata.json")
            args["output_dir"] = str(tmp_path / "frames")
            args["output_height"] = 32  # the dataset's frame height, as in the shipped config
        elif callback["class_path"] == "EditMetricsCallback":
            args["metadata"] = str(data_root / "synthego_metadata.json")
            args["output_dir"] = str(tmp_path / "metrics")
            args["ground_truth_dir"] = str(data_root / "EgoGen/synthego/val_gt_for_metric")
    config["data"]["init_args"].update(root=str(data_root), resolution=resolution)
    path = tmp_path / "copy_input.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_test_run_through_yaml_saves_its_config(synthego_root, tmp_path):
    main(["test", "--config", str(copy_input_config(synthego_root, tmp_path))])
    saved = list((tmp_path / "logs").rglob("config.yaml"))
    assert len(saved) == 1
    config = yaml.safe_load(saved[0].read_text())
    assert config["data"]["init_args"]["root"] == str(synthego_root)
    assert config["model"]["class_path"].endswith(".CopyInputGenerator")


def test_test_and_evaluate_give_one_number_for_one_frame_set(synthego_root, tmp_path):
    """``test`` scores what FramesWriter writes, against the files ``evaluate`` reads."""
    config = copy_input_config(synthego_root, tmp_path, resolution=16)  # upsampled to 32
    main(["test", "--config", str(config)])
    logged = json.loads((tmp_path / "metrics" / "metrics.json").read_text())["metrics"]
    base = synthego_root / "EgoGen" / "synthego"
    report = tmp_path / "evaluated.json"
    main(["evaluate", "--generated", str(tmp_path / "frames"),
          "--ground-truth", str(base / "val_gt_for_metric"),
          "--records", str(synthego_root / "synthego_val.json"),
          "--metadata", str(synthego_root / "synthego_metadata.json"),
          "--metrics", "psnr", "synthego", "--dataset", "synthego", "--device", "cpu",
          "--no-progress", "--output", str(report)])
    evaluated = json.loads(report.read_text())
    assert evaluated["scored"] == 8 and not any(evaluated["problems"].values())
    assert set(logged) == set(evaluated["metrics"])
    for name, value in logged.items():
        assert evaluated["metrics"][name] == pytest.approx(value, abs=1e-4), name


def test_an_unwritable_frames_folder_fails_before_the_first_batch(
    synthego_root, tmp_path, capsys
):
    config = copy_input_config(synthego_root, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    text = config.read_text().replace(str(tmp_path / "frames"), str(blocker / "frames"))
    config.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: FramesWriter.output_dir: cannot write to" in err and "a-file/frames" in err
    assert not (tmp_path / "metrics" / "metrics.json").exists()  # no batch ran


def test_step_bounded_runs_show_no_negative_epoch_total():
    from types import SimpleNamespace

    from lego.callbacks import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=-1)
    assert bar._get_train_description(2).strip() == "Epoch 2"  # the stock bar: "Epoch 2/-2"
    bar._trainer = SimpleNamespace(max_epochs=5)
    assert bar._get_train_description(2).strip() == "Epoch 2/4"


def test_the_cli_adds_the_progress_bar_unless_turned_off(synthego_root, tmp_path):
    from lego.callbacks import StepProgressBar

    config = copy_input_config(synthego_root, tmp_path)
    text = config.read_text().replace("enable_progress_bar: false", "enable_progress_bar: true")
    config.write_text(text)
    cli = LegoCLI(args=["--config", str(config)], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, StepProgressBar)
    quiet = LegoCLI(args=["--config", str(config), "--trainer.enable_progress_bar=false"],
                    run=False)
    assert quiet.trainer.progress_bar_callback is None
