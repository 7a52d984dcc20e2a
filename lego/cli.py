"""Command line of ``lego``: LightningCLI for fit/validate/test/predict plus the tools."""

from __future__ import annotations

import os
import sys
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

# Importing the subpackages registers every selectable class, so YAML can name them by their
# short class name (``class_path: SynthEgoDataModule``).
import lego.callbacks  # noqa: F401
import lego.data  # noqa: F401
import lego.metrics  # noqa: F401
import lego.models  # noqa: F401
from lego import tools
from lego.callbacks.progress import StepProgressBar
from lego.errors import ConfigError, TrainingFreeError, UserError

#: Flag (or ``LEGO_DEBUG=1``) that shows the traceback of a user error.
DEBUG_FLAG = "--debug"

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

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Pass what the model consumes to the data module, so it is set in one place.

        The model's ``vlm_dim`` (its conditioner's input width) is the one setting; the data
        module receives it to check the feature cache at setup (``None`` without VLM
        conditioning: no check). A model that reads the input frames as stored (the VLM with
        ``image_source: file``) gets them in its batches (``input_images``).
        """
        parser.link_arguments(
            "model", "data.init_args.vlm_dim", compute_fn=_model_vlm_dim, apply_on="instantiate"
        )
        parser.link_arguments(
            "model", "data.init_args.input_images", compute_fn=_reads_input_images,
            apply_on="instantiate",
        )

    def before_instantiate_classes(self) -> None:
        """Refuse a ``vlm_dim`` given to the data module: the model's is the one used.

        Raises:
            ConfigError: If ``data.init_args.vlm_dim`` is set in the config or command line.
        """
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else (
            self.config)
        data = config.get("data")
        given = None
        if data is not None and getattr(data, "init_args", None) is not None:
            given = data.init_args.get("vlm_dim")
        if given is not None:
            raise ConfigError(
                f"data.init_args.vlm_dim={given}: the VLM width is set once, by the model "
                "(model.init_args.vlm_dim), and passed to the data module; remove it from data"
            )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        """Add lego's progress bar unless the config names one or turns the bar off."""
        named = list(config.get("callbacks") or []) + list(callbacks)
        if (_RICH_AVAILABLE and config.get("enable_progress_bar", True) is not False
                and not any(isinstance(c, ProgressBar) for c in named)):
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a constructor's refusal of a value is a user error.

        Raises:
            ConfigError: If a class rejects an option (its ``ValueError`` names the option).
        """
        try:
            super().instantiate_classes()
        except ValueError as err:
            if isinstance(err, UserError):
                raise
            # jsonargparse wraps the constructor's error in its own report: name the original.
            cause: BaseException = err
            while isinstance(cause.__cause__ or cause.__context__, ValueError):
                cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
            raise ConfigError(f"invalid option: {cause}") from err

    def before_fit(self) -> None:
        """Refuse ``fit`` for a training-free method before anything is built.

        Raises:
            TrainingFreeError: If the model declares ``trainable = False``.
        """
        if not getattr(self.model, "trainable", True):
            name = type(self.model).__name__
            raise TrainingFreeError(
                f"{name} is training-free: there is nothing to fit. Generate and score its frames "
                "with `python -m lego test --config <the same config>`"
            )


def _model_vlm_dim(model: Any) -> int | None:
    """The VLM width of an instantiated model (``None`` without VLM conditioning)."""
    hparams = getattr(model, "hparams", None) or {}
    return hparams.get("vlm_dim", getattr(model, "vlm_dim", None))


def _reads_input_images(model: Any) -> bool:
    """Whether an instantiated model needs the input frames as stored in its batches."""
    return bool(getattr(model, "reads_input_images", False))


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
    lines += [
        "",
        "Run `python -m lego <command> --help` for the options of a command. A mistake in a",
        f"config, data or weights prints one line and exits 2; add {DEBUG_FLAG} (or set",
        "LEGO_DEBUG=1) for the traceback.",
    ]
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Run ``python -m lego``.

    A :class:`lego.errors.UserError` (bad data, weights not found, a training-free method given
    ``fit`` ...) ends the command with its one-line message and exit status 2, unless
    ``--debug`` is given or ``LEGO_DEBUG`` is set; other exceptions propagate with their traceback.

    Args:
        argv: Command line arguments (default: ``sys.argv[1:]``).

    Raises:
        SystemExit: With status 2 on a user error or an unknown command.
    """
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("LEGO_DEBUG", "") not in ("", "0")
    if DEBUG_FLAG in argv:
        debug = True
        argv = [a for a in argv if a != DEBUG_FLAG]
        if from_command_line:
            sys.argv = [a for a in sys.argv if a != DEBUG_FLAG]
    try:
        _dispatch(argv, from_command_line)
    except UserError as err:
        if debug:
            raise
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        print(f"(add {DEBUG_FLAG} for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _dispatch(argv: list[str], from_command_line: bool) -> None:
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
