"""lab2048: train, serve and study 2048-playing transformers.

The package root imports nothing heavy; see `lab2048.engine` for the game engine.
"""

__version__ = "0.1.0"
