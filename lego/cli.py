"""Command line of ``lego``: LightningCLI for fit/validate/test/predict plus the tools."""

from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

# Importing the subpackages registers every selectable class, so YAML can name them by their
# short class name (``class_path: SynthEgoDataModule``).
import lego.callbacks  # noqa: F401
import lego.data  # noqa: F401
import lego.metrics  # noqa: F401
import lego.models  # noqa: F401
from lego import tools

LIGHTNING_COMMANDS = {
    "fit": "Train a model (instruction tuning or action frame diffusion).",
    "validate": "Run one validation epoch.",
    "test": "Generate action frames for the test split and evaluate them.",
    "predict": "Run inference over a split (describe: VLM features; generate: frames).",
}

DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
    "init_args": {"save_dir": "logs", "name": "lego"},
}


class LegoCLI(LightningCLI):
    """LightningCLI with lego's defaults.

    Model and data are chosen by ``class_path`` (subclass mode, short names resolvable), the
    resolved config is saved into each run's log directory, and TensorBoard is the default logger.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": DEFAULT_LOGGER},
            parser_kwargs={"description": "lego: egocentric action frame generation."},
            args=args,
            run=run,
        )


def print_help() -> None:
    """Print the list of all commands of ``python -m lego``."""
    lines = [
        "usage: python -m lego <command> [options]",
        "",
        "LEGO: egocentric action frame generation (Lightning commands take --config YAML).",
        "",
        "Lightning commands:",
    ]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()]
    lines += ["", "Tools:"]
    lines += [f"  {name:<10} {tools.summary(mod)}" for name, mod in tools.discover().items()]
    lines += ["", "Run `python -m lego <command> --help` for the options of a command."]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m lego``.

    Args:
        argv: Command line arguments (default: ``sys.argv[1:]``).
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print_help()
        return
    available = tools.discover()
    if argv[0] in available:
        code = tools.run_tool(argv[0], argv[1:])
        if code:
            raise SystemExit(code)
        return
    if argv[0] not in LIGHTNING_COMMANDS:
        print(f"error: unknown command {argv[0]!r}\n", file=sys.stderr)
        print_help()
        raise SystemExit(2)
    # From the shell LightningCLI reads sys.argv itself (passing it again only triggers a warning).
    LegoCLI(args=None if from_command_line else argv)
