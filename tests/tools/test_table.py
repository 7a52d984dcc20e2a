import json

import pytest
import yaml

from lego.cli import main
from lego.tools import table
from tests.models.editing.test_diffusion_cli import tiny_config


@pytest.fixture
def configs(synthego_backbone, synthego_root, tmp_path):
    """Tiny copies of the shipped SynthEgo configs of SDEdit and the copy-input reference."""
    folder = tmp_path / "configs"
    folder.mkdir()
    copy = tiny_config("configs/synthego/sdedit.yaml", synthego_backbone, synthego_root, folder)
    config = yaml.safe_load(copy.read_text())
    config["model"] = {"class_path": "CopyInputGenerator"}
    (folder / "copy_input.yaml").write_text(yaml.safe_dump(config))
    return folder


def test_table_runs_each_method_and_writes_table_and_grid(configs, tmp_path, capsys):
    out = tmp_path / "table"
    stale = out / "sdedit" / "frames" / "old.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    main(["table", "--configs", str(configs), "--out", str(out), "--methods", "ip2p", "sdedit",
          "copy_input", "--set", "sdedit:model.init_args.strength=0.4"])  # returns: exit 0
    rows = {row["method"]: row for row in json.loads((out / "table.json").read_text())}
    assert list(rows) == ["copy_input", "sdedit", "ip2p"]  # the paper's order
    for method in ("copy_input", "sdedit"):
        assert rows[method]["metrics"]["psnr"] > 5, method
        assert len(list((out / method / "frames").rglob("*.png"))) == 8, method
    assert not stale.exists()  # a method's folder holds its own run only
    assert rows["sdedit"]["generator"]["hparams"]["strength"] == 0.4
    assert rows["ip2p"]["metrics"] is None and "not run" in rows["ip2p"]["note"]
    markdown = (out / "table.md").read_text()
    assert markdown.splitlines()[0].startswith("| method | action score (%)")
    assert "| SDEdit |" in markdown and "| IP2P (action label) | – |" in markdown
    assert (out / "table.png").stat().st_size > 1000
    assert "| Copy input (reference) |" in capsys.readouterr().out


def test_format_table_scales_and_marks_missing_values():
    rows = [{"title": "A", "metrics": {"synthego_hand_hit": 57.5, "psnr": 21.3}, "seconds": 3.2},
            {"title": "B", "metrics": None, "note": "not run"}]
    lines = table.format_table(rows).splitlines()
    assert lines[0] == "| method | action score (%) ↑ | PSNR (dB) ↑ | seconds | note |"
    assert lines[2] == "| A | 57.5 | 21.30 | 3 |  |"
    assert lines[3] == "| B | – | – | – | not run |"


def test_unknown_method_in_an_option_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["table", "--out", str(tmp_path), "--ckpt", "nope=x.ckpt"])
    assert exit_info.value.code == 2
    assert "unknown method(s) ['nope']" in capsys.readouterr().err
