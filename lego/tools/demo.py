"""Run the paper's four stages on SynthEgo with the shipped backbones, timing each stage.

The stages are the commands a user types (each a separate ``python -m lego`` process):
SynthEgo generation, instruction tuning of ``pretrained/synthego-vlm``, the describe stage on
train and val, LEGO training from ``pretrained/synthego-sd`` on the VLM's descriptions, and the
test of LEGO beside the copy-input reference and the training-free baselines (SDEdit, ProxEdit),
printed as the paper's table in miniature (``python -m lego table``; ``<outputs>/table``). Then
it draws the first val pairs with LEGO's frames (``<outputs>/lego_val.png``).
Each stage's wall time and peak memory are printed at the end and written to
``--report`` (JSON) with the description accuracy and the test metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lego.data.io import DataFormatError
from lego.synthego import write_grid

LEGO = [sys.executable, "-m", "lego"]
#: The dataset root the SynthEgo configs read.
DATA = "data/synthego"
QUIET = "--trainer.enable_progress_bar=false"
#: Where the describe stage writes the enriched records (configs/synthego/describe.yaml).
RECORDS = "features/synthego/records"
#: LEGO's checkpoint after the fit stage.
CHECKPOINT = "logs/demo_lego/demo/checkpoints/last.ckpt"
#: The rows of the demo's table: the reference, the training-free baselines and LEGO (IP2P and
#: the oracle LEGO need training runs of their own: ``python -m lego table --help``).
TABLE_METHODS = ("copy_input", "sdedit", "proxedit", "lego")


def stages(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The demo's stages as ``(name, command)``, in order."""
    return [
        ("data", [*LEGO, "synthego", "--out", DATA, "--train", str(args.train), "--val",
                  str(args.val), "--size", "64", "--seed", "0",
                  "--grid", str(args.outputs / "synthego_pairs.png")]),
        ("instruct", [*LEGO, "fit", "--config", "configs/synthego/instruct.yaml",
                      f"--trainer.max_epochs={args.vlm_epochs}",
                      "--trainer.logger.init_args.name=demo_instruct",
                      "--trainer.logger.init_args.version=demo", QUIET]),
        ("describe train", [*LEGO, "predict", "--config", "configs/synthego/describe.yaml",
                            "--data.init_args.predict_split=train", QUIET]),
        ("describe val", [*LEGO, "predict", "--config", "configs/synthego/describe.yaml",
                          "--data.init_args.predict_split=val", QUIET]),
        ("lego fit", [*LEGO, "fit", "--config", "configs/synthego/lego.yaml",
                      f"--trainer.max_steps={args.steps}",
                      "--trainer.logger.init_args.name=demo_lego",
                      "--trainer.logger.init_args.version=demo", QUIET]),
        ("test and table", [*LEGO, "table", "--methods", *TABLE_METHODS,
                            "--ckpt", f"lego={CHECKPOINT}", "--out", str(args.outputs / "table")]),
    ]


#: What a stage leaves behind that the next run must not find (a new VLM refuses an old
#: feature cache; a new fit would write last-v1.ckpt beside the old last.ckpt; old frames).
STALE = {
    "describe train": ["features/synthego"],
    "lego fit": ["logs/demo_lego/demo"],
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tool's options.

    Args:
        parser: The tool's parser.
    """
    parser.add_argument("--steps", type=int, default=1500, help="LEGO training steps")
    parser.add_argument("--train", type=int, default=2000, help="SynthEgo train pairs")
    parser.add_argument("--val", type=int, default=200, help="SynthEgo val pairs")
    parser.add_argument("--vlm-epochs", type=int, default=6, help="instruction tuning epochs")
    parser.add_argument("--outputs", type=Path, default=Path("outputs/demo"),
                        help="folder of the demo's pictures and report")
    parser.add_argument("--report", type=Path, default=None,
                        help="timings and figures as JSON (default: <outputs>/report.json)")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run only these stages (as printed), e.g. 'lego fit' 'test and table'")


def _run(name: str, command: list[str]) -> dict[str, Any]:
    print(f"\n=== {name}: {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    # ru_maxrss is in kilobytes on Linux
    return {"stage": name, "seconds": round(seconds, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "exit_code": process.returncode}


def _figures(outputs: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for split in ("train", "val"):
        path = Path("features/synthego") / f"description_metrics_{split}.json"
        if path.is_file():
            figures[f"description_accuracy_{split}"] = json.loads(path.read_text())
    metrics = outputs / "table" / "lego" / "metrics.json"
    if metrics.is_file():
        figures["test"] = json.loads(metrics.read_text()).get("metrics", {})
    table = outputs / "table" / "table.json"
    if table.is_file():
        figures["table"] = [{k: row.get(k) for k in ("method", "metrics", "seconds", "note")}
                            for row in json.loads(table.read_text())]
    return figures


def _picture(outputs: Path) -> Path:
    """The first val pairs: input | LEGO's frame | the true action frame | label, description."""
    return write_grid(Path(RECORDS) / "synthego_val.json", Path(DATA) / "EgoGen/synthego/val",
                      outputs / "lego_val.png", n=8, cell=96,
                      generated=[("LEGO", outputs / "table" / "lego" / "frames")],
                      description_key="llava_forecast_finetune")


def run(args: argparse.Namespace) -> int:
    """Run the stages, stop at the first failure, and report.

    Args:
        args: Parsed options.

    Returns:
        0 when every stage succeeded, else the failed stage's exit code.
    """
    plan = stages(args)
    if args.only:
        unknown = set(args.only) - {name for name, _ in plan}
        if unknown:
            print(f"error: unknown stage(s) {sorted(unknown)}; stages: "
                  f"{[name for name, _ in plan]}", file=sys.stderr)
            return 2
        plan = [(name, command) for name, command in plan if name in args.only]
    results = []
    code = 0
    for name, command in plan:
        for stale in STALE.get(name, []):
            shutil.rmtree(stale, ignore_errors=True)
        result = _run(name, command)
        results.append(result)
        if result["exit_code"]:
            code = result["exit_code"]
            print(f"error: stage {name!r} failed (exit {code})", file=sys.stderr)
            break
    total = sum(r["seconds"] for r in results)
    print("\n| stage | wall time | peak memory |\n|---|---|---|")
    for r in results:
        print(f"| {r['stage']} | {r['seconds'] / 60:.1f} min | {r['peak_rss_mb']} MB |")
    print(f"| all | {total / 60:.1f} min | {max(r['peak_rss_mb'] for r in results)} MB |")
    report = args.report or args.outputs / "report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"steps": args.steps, "vlm_epochs": args.vlm_epochs,
                                  "stages": results, "total_seconds": round(total, 1),
                                  **_figures(args.outputs)}, indent=2) + "\n")
    print(f"report: {report}")
    if code == 0 and "test and table" in dict(plan):
        try:  # after the report: a missing frame must not lose the run's figures
            picture = _picture(args.outputs)
        except DataFormatError as err:
            print(f"error: cannot draw the val pairs: {err}", file=sys.stderr)
            return 1
        print(f"val pairs (input | LEGO | action frame | label, VLM description): {picture}")
    return code
