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


#: A line that shows where a stage stands, per stage of the demo.
PROGRESS = {
    "data": r"SynthEgo pairs: 100%",
    "instruct": r"fit step 2/2 \(100 %\)",
    "describe train": r"predict batch 1/1",
    "describe val": r"predict batch 1/1",
    "lego fit": r"fit step 3/3 \(100 %\)",
    "test and table": r"test batch 1/1",
}


def test_a_shortened_demo_shows_progress_in_every_stage(tmp_path):
    """The demo's own commands on 32 + 8 pairs, in a scratch folder (configs and backbones
    linked from the repository): every stage prints where it stands, fits log to a file."""
    import os
    import re
    import subprocess
    import sys

    for name in ("configs", "pretrained"):
        (tmp_path / name).symlink_to(Path(name).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lego", "demo", "--train", "32", "--val", "8", "--steps", "3",
         "--vlm-epochs", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    sections = dict(
        (part.split(":", 1)[0], part) for part in re.split(r"\n=== ", proc.stdout)[1:]
    )
    assert list(sections) == list(PROGRESS)
    for stage, pattern in PROGRESS.items():
        assert re.search(pattern, sections[stage]), (stage, sections[stage][-2000:])
    assert sections["test and table"].count("test batch 1/1") == len(demo.TABLE_METHODS)
    for run in ("demo_instruct", "demo_lego"):
        lines = (tmp_path / "logs" / run / "demo" / "progress.log").read_text().splitlines()
        assert lines[0].endswith("fit: training from step 0 to " + ("2" if "instruct" in run
                                                                    else "3"))
        assert "fit: done at step" in lines[-1]
    report = (tmp_path / "outputs" / "demo" / "report.json").read_text()
    assert '"stage": "test and table"' in report
