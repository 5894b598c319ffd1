"""Version of the MRISuperRes engine (semantic versioning)."""

__version__ = "0.1.0"
