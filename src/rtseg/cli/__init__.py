"""The ``rtseg`` command line: :mod:`rtseg.cli.parser` (arguments), :mod:`rtseg.cli.main` (one function per
sub-command, each calling one task of :mod:`rtseg.tasks`), :mod:`rtseg.cli.format` (how records are printed).
``python -m rtseg.cli`` runs it too (:mod:`rtseg.cli.__main__`)."""
from rtseg.cli.main import main

__all__ = ["main"]
