"""SynthEgo: the built-in procedural egocentric action dataset (EgoGen release layout)."""

from lego.synthego.grid import write_grid
from lego.synthego.world import QUERY, vocabulary
from lego.synthego.writer import generate

__all__ = ["QUERY", "generate", "vocabulary", "write_grid"]
