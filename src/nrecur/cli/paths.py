"""Argument types for paths, light enough for the parser that reads mistakes before anything heavy loads."""

from __future__ import annotations

import argparse
import os

__all__ = ["existing_path"]


def existing_path(text: str) -> str:
    """An argparse ``type``: a path that must exist (a typo is caught before anything is imported or read)."""
    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return text
