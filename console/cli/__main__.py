"""`python -m console.cli`: the `fleetscan` program."""

from console.cli import entry

entry()
