"""The package's version, in a leaf of its own: modules that need it import nothing else with it."""

__version__ = "0.1.0"
