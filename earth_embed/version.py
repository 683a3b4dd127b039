"""The package version (one place; ``earth_embed.__version__`` re-exports it)."""

__version__ = "0.1.0"
