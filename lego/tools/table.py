"""Run every method on SynthEgo val and print the paper's table in miniature (Markdown + PNG grid).

Each method is its shipped config (``configs/synthego/<method>.yaml``) run as ``python -m lego
test`` in a process of its own, with its frames, metrics and logs under ``--out/<method>``
(the folder is emptied first, so the frames scored are the run's own). Methods that train need
a checkpoint (``--ckpt ip2p=PATH``); LEGO's defaults to the one ``make demo`` writes. A method
without one, or whose run fails, gets a row that says so. The table follows the paper's layout
(Table 1: the baselines, then LEGO) with the metrics SynthEgo can score offline: the action
score (right hand at the named object), the hand's distance from it, and PSNR. It is written as
``table.md`` and ``table.json`` beside a PNG grid of the first val pairs (input | each method |
action frame).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lego.data.io import DataFormatError
from lego.synthego import write_grid

LEGO = [sys.executable, "-m", "lego"]


@dataclass(frozen=True)
class Method:
    """A row of the table: the config that runs it and how it is named."""

    key: str
    title: str
    trains: bool


#: The rows, in the paper's order (references and training-free baselines first, LEGO last).
METHODS: tuple[Method, ...] = (
    Method("copy_input", "Copy input (reference)", False),
    Method("sdedit", "SDEdit", False),
    Method("proxedit", "ProxEdit", False),
    Method("ip2p", "IP2P (action label)", True),
    Method("lego", "LEGO (VLM's descriptions)", True),
    Method("lego_oracle", "LEGO (oracle descriptions)", True),
)
BY_KEY = {m.key: m for m in METHODS}

#: Default checkpoints (the ones ``make demo`` writes).
DEFAULT_CKPTS = {"lego": Path("logs/demo_lego/demo/checkpoints/last.ckpt")}

#: Columns: metric key in ``metrics.json`` -> (header, scale, decimals).
COLUMNS: dict[str, tuple[str, float, int]] = {
    "synthego_hand_hit": ("action score (%) ↑", 1.0, 1),
    "synthego_hand_error": ("hand error (px) ↓", 1.0, 1),
    "psnr": ("PSNR (dB) ↑", 1.0, 2),
    "lpips": ("LPIPS ↓", 1.0, 2),
    "clip_image": ("CLIP ↑", 1.0, 2),
    "egovlp": ("EgoVLP ↑", 1.0, 2),
    "egovlp_plus": ("EgoVLP+ ↑", 1.0, 2),
    "fid": ("FID ↓", 1.0, 2),
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the tool's options.

    Args:
        parser: The tool's parser.
    """
    parser.add_argument("--methods", nargs="+", default=[m.key for m in METHODS],
                        choices=[m.key for m in METHODS], help="rows to run, in table order")
    parser.add_argument("--ckpt", action="append", default=[], metavar="METHOD=PATH",
                        help="checkpoint of a method that trains (repeatable); LEGO defaults "
                        f"to {DEFAULT_CKPTS['lego']}")
    parser.add_argument("--configs", type=Path, default=Path("configs/synthego"),
                        help="folder of the methods' configs")
    parser.add_argument("--out", type=Path, default=Path("outputs/table"),
                        help="where frames, metrics, table.md/json and table.png go")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="score only this many test batches per method")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="override a method's option, e.g. sdedit:model.init_args.strength=0.3")


def _parse_pairs(values: list[str], sep: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        head, found, tail = value.partition(sep)
        if not found or not head or not tail:
            raise SystemExit(f"error: {what} must look like {sep.join(('A', 'B'))}, got {value!r}")
        pairs.append((head, tail))
    return pairs


def prepare_config(source: Path, out: Path, method: str, overrides: list[str]) -> Path:
    """Write a copy of a method's config whose outputs all go under ``out/<method>``.

    Args:
        source: The shipped config.
        out: The table's output folder.
        method: The method's key.
        overrides: ``KEY=VALUE`` dotted overrides (``model.init_args.strength=0.3``).

    Returns:
        The written config.

    Raises:
        DataFormatError: If the config cannot be read.
    """
    try:
        config = yaml.safe_load(source.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataFormatError(f"{source}: cannot read the config ({err})") from err
    root = out / method
    trainer = config.setdefault("trainer", {})
    trainer["logger"] = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": "logs", "version": "test"},
    }
    for callback in trainer.get("callbacks", []):
        args = callback.setdefault("init_args", {})
        if callback["class_path"] == "FramesWriter":
            args["output_dir"] = str(root / "frames")
        elif callback["class_path"] == "EditMetricsCallback":
            args["output_dir"] = str(root)
    for key, value in _parse_pairs(overrides, "=", "--set"):
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(value)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: one row per method, the columns any of them has.

    Args:
        rows: ``{"title", "metrics" (or None), "note", "seconds"}`` per method.

    Returns:
        The table, with a note column for rows that did not run.
    """
    present = [k for k in COLUMNS if any(k in (r.get("metrics") or {}) for r in rows)]
    header = ["method", *[COLUMNS[k][0] for k in present], "seconds", "note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        metrics = row.get("metrics") or {}
        cells = [row["title"]]
        for key in present:
            _, scale, decimals = COLUMNS[key]
            value = metrics.get(key)
            cells.append("–" if value is None else f"{value * scale:.{decimals}f}")
        seconds = row.get("seconds")
        cells.append("–" if seconds is None else f"{seconds:.0f}")
        cells.append(row.get("note", ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the methods, write the table and the grid.

    Args:
        args: Parsed options.

    Returns:
        0 when every requested method that could run succeeded, else 1.
    """
    ckpts = {**DEFAULT_CKPTS, **{k: Path(v) for k, v in _parse_pairs(args.ckpt, "=", "--ckpt")}}
    overrides: dict[str, list[str]] = {}
    for method, override in _parse_pairs(args.set, ":", "--set"):
        overrides.setdefault(method, []).append(override)
    unknown = (set(ckpts) | set(overrides)) - set(BY_KEY)
    if unknown:
        print(f"error: unknown method(s) {sorted(unknown)}; methods: {list(BY_KEY)}",
              file=sys.stderr)
        return 2
    chosen = [m for m in METHODS if m.key in args.methods]
    rows: list[dict[str, Any]] = []
    failed = False
    for method in chosen:
        row: dict[str, Any] = {"method": method.key, "title": method.title, "metrics": None}
        rows.append(row)
        source = args.configs / f"{method.key}.yaml"
        ckpt = ckpts.get(method.key)
        if method.trains and (ckpt is None or not ckpt.is_file()):
            row["note"] = (f"not run: no checkpoint ({ckpt} missing)" if ckpt else
                           f"not run: train it (python -m lego fit --config {source}) and "
                           f"pass --ckpt {method.key}=PATH")
            print(f"== {method.title}: {row['note']}")
            continue
        shutil.rmtree(args.out / method.key, ignore_errors=True)
        config = prepare_config(source, args.out, method.key, overrides.get(method.key, []))
        # progress: the configs' ProgressLogger lines (read well in a log), not a redrawn bar
        command = [*LEGO, "test", "--config", str(config), "--trainer.enable_progress_bar=false"]
        if method.trains:
            command += ["--ckpt_path", str(ckpt)]
        if args.limit_batches:
            command.append(f"--trainer.limit_test_batches={args.limit_batches}")
        print(f"\n== {method.title}: {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command)
        row["seconds"] = round(time.perf_counter() - started, 1)
        metrics_file = args.out / method.key / "metrics.json"
        if code or not metrics_file.is_file():
            failed = True
            row["note"] = f"failed (exit {code})"
            continue
        report = json.loads(metrics_file.read_text())
        row["metrics"] = report.get("metrics", {})
        row["generator"] = report.get("generator")
        row["note"] = f"checkpoint {ckpt}" if method.trains else ""
    table = format_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\nSynthEgo val (action score: right hand at the named object):\n")
    print(table)
    print(f"\ntable: {args.out / 'table.md'}")
    generated = [(m.title.split(" (")[0] if m.key != "lego_oracle" else "LEGO oracle",
                  args.out / m.key / "frames")
                 for m in chosen if any(r["method"] == m.key and r["metrics"] for r in rows)]
    data_root = Path(_data_root(args.configs / f"{chosen[0].key}.yaml")) if chosen else None
    if generated and data_root is not None:
        try:
            picture = write_grid(data_root / "synthego_val.json",
                                 data_root / "EgoGen/synthego/val", args.out / "table.png",
                                 n=6, cell=96, generated=generated)
            print(f"grid (input | each method | action frame): {picture}")
        except DataFormatError as err:
            print(f"error: cannot draw the grid: {err}", file=sys.stderr)
            return 1
    return 1 if failed else 0


def _data_root(config: Path) -> str:
    try:
        loaded = yaml.safe_load(config.read_text())
        return str(loaded["data"]["init_args"]["root"])
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return "data/synthego"
