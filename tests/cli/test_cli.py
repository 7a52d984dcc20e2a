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


def test_test_run_through_yaml_saves_its_config(synthego_root, tmp_path):
    main([
        "test", "--config", "configs/synthego/copy_input.yaml",
        f"--data.init_args.root={synthego_root}", "--data.init_args.resolution=32",
        f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.enable_progress_bar=false",
    ])
    saved = list(tmp_path.rglob("config.yaml"))
    assert len(saved) == 1
    config = yaml.safe_load(saved[0].read_text())
    assert config["data"]["init_args"]["root"] == str(synthego_root)
    assert config["model"]["class_path"].endswith(".CopyInputGenerator")
