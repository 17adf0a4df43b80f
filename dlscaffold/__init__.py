"""dlscaffold: a compact PyTorch runtime behind a copier project template.

Importing this package is cheap: torch is imported only by the modules that need it.
"""

__version__ = "0.1.0"
