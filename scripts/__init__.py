"""Maintenance scripts (documentation pictures); run from the project root as `python -m scripts.NAME`."""
