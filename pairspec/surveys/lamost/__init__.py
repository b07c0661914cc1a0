"""LAMOST (Guoshoujing Telescope): the MRS and LRS spectrum-file adapter (med-*/spec-* files, both
layouts of each), its grids and label schema, and a simulator writing a synthetic survey in the same
formats. What is read, and what is not verified, is in README.md beside this file."""

from pairspec.surveys.lamost.adapter import LamostAdapter

__all__ = ["LamostAdapter"]
