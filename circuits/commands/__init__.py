"""Subcommands of the ``circuits`` console script (see :mod:`circuits.cli`)."""
