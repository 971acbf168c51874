"""The `fleetscan` command line."""

from console.cli.main import main

__all__ = ["main"]
