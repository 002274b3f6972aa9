"""actionray: a Ray-based experiment platform for video action recognition research."""

__version__ = "0.1.0"
