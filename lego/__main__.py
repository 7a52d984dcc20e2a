"""Entry point for ``python -m lego``."""

from lego.cli import main

if __name__ == "__main__":
    main()
