"""Non-Lightning commands of ``python -m lego`` (``synthego``, ``bootstrap``, ``evaluate`` ...).

A tool is a module in this package that defines ``configure_parser(parser)`` and ``run(args)``;
its command name is the module name with ``_`` replaced by ``-`` and the first line of its
docstring is its one-line help. Tools are discovered, so adding one is adding a file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from types import ModuleType


def discover() -> dict[str, ModuleType]:
    """Return the tool modules of this package, keyed by command name.

    Returns:
        Command name -> module, sorted by name.
    """
    tools: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "configure_parser") and hasattr(module, "run"):
            tools[info.name.replace("_", "-")] = module
    return tools


def summary(module: ModuleType) -> str:
    """Return the one-line help of a tool module (the first line of its docstring)."""
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def run_tool(name: str, argv: list[str]) -> int:
    """Parse ``argv`` for tool ``name`` and run it.

    Args:
        name: Command name, e.g. ``"synthego"``.
        argv: The arguments after the command name.

    Returns:
        The tool's exit status.
    """
    module = discover()[name]
    parser = argparse.ArgumentParser(
        prog=f"python -m lego {name}",
        description=(module.__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.configure_parser(parser)
    args = parser.parse_args(argv)
    return int(module.run(args) or 0)
