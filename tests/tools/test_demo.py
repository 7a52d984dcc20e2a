import argparse
from pathlib import Path

import pytest

from lego.cli import main
from lego.tools import demo


def args(**over):
    parser = argparse.ArgumentParser()
    demo.configure_parser(parser)
    return parser.parse_args([f"--{k}={v}" for k, v in over.items()])


def test_stages_run_the_shipped_configs_in_the_paper_order():
    plan = demo.stages(args(steps=123, **{"vlm-epochs": 3}))
    assert [name for name, _ in plan] == [
        "data", "instruct", "describe train", "describe val", "lego fit", "lego test"]
    for _, command in plan:
        if "--config" in command:
            assert Path(command[command.index("--config") + 1]).is_file()
    fit = dict(plan)["lego fit"]
    assert "--trainer.max_steps=123" in fit and "configs/synthego/lego.yaml" in fit
    assert "--trainer.max_epochs=3" in dict(plan)["instruct"]


def test_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--only", "nope"])
    assert exit_info.value.code == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def test_picture_reads_where_the_configs_write():
    import yaml

    describe = yaml.safe_load(Path("configs/synthego/describe.yaml").read_text())
    lego = yaml.safe_load(Path("configs/synthego/lego.yaml").read_text())
    writer = next(c for c in lego["trainer"]["callbacks"] if c["class_path"] == "FramesWriter")
    assert writer["init_args"]["output_dir"] == demo.FRAMES
    assert lego["data"]["init_args"]["records_dir"] == demo.RECORDS
    assert demo.RECORDS in yaml.safe_dump(describe)


def test_a_picture_that_cannot_be_drawn_keeps_the_report(tmp_path, monkeypatch, capsys):
    import sys

    from lego.data.io import DataFormatError

    monkeypatch.setattr(demo, "stages", lambda _: [("lego test", [sys.executable, "-c", "pass"])])

    def missing(_):
        raise DataFormatError("records: frame not found: x.png")

    monkeypatch.setattr(demo, "_picture", missing)
    code = demo.run(args(outputs=tmp_path, report=tmp_path / "r.json"))
    assert code == 1
    assert (tmp_path / "r.json").is_file()
    assert "cannot draw the val pairs: records: frame not found" in capsys.readouterr().err
