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
        "data", "instruct", "describe train", "describe val", "lego fit", "test and table"]
    for _, command in plan:
        if "--config" in command:
            assert Path(command[command.index("--config") + 1]).is_file()
    fit = dict(plan)["lego fit"]
    assert "--trainer.max_steps=123" in fit and "configs/synthego/lego.yaml" in fit
    assert "--trainer.max_epochs=3" in dict(plan)["instruct"]
    table = dict(plan)["test and table"]
    assert table[3] == "table" and f"lego={demo.CHECKPOINT}" in table
    for method in demo.TABLE_METHODS:
        assert method in table and Path(f"configs/synthego/{method}.yaml").is_file()


def test_unknown_stage_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--only", "nope"])
    assert exit_info.value.code == 2
    assert "unknown stage(s) ['nope']" in capsys.readouterr().err


def test_picture_reads_where_the_configs_write():
    import yaml

    describe = yaml.safe_load(Path("configs/synthego/describe.yaml").read_text())
    lego = yaml.safe_load(Path("configs/synthego/lego.yaml").read_text())
    checkpoint = Path(demo.CHECKPOINT).parts
    fit = dict(demo.stages(args()))["lego fit"]
    assert f"--trainer.logger.init_args.name={checkpoint[1]}" in fit
    assert f"--trainer.logger.init_args.version={checkpoint[2]}" in fit
    assert lego["data"]["init_args"]["records_dir"] == demo.RECORDS
    assert demo.RECORDS in yaml.safe_dump(describe)


def test_a_picture_that_cannot_be_drawn_keeps_the_report(tmp_path, monkeypatch, capsys):
    import sys

    from lego.data.io import DataFormatError

    monkeypatch.setattr(
        demo, "stages", lambda _: [("test and table", [sys.executable, "-c", "pass"])]
    )

    def missing(_):
        raise DataFormatError("records: frame not found: x.png")

    monkeypatch.setattr(demo, "_picture", missing)
    code = demo.run(args(outputs=tmp_path, report=tmp_path / "r.json"))
    assert code == 1
    assert (tmp_path / "r.json").is_file()
    assert "cannot draw the val pairs: records: frame not found" in capsys.readouterr().err
