"""Conversion, training and evaluation scripts; never imported by the daemon.

Run each from the project root as a module, e.g. `python -m training.evaluate --help`.
"""
