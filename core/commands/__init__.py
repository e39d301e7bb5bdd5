"""The ``ember`` command's subcommands: tools beside the kernel, not part of it.

``ember.cli:main`` (the console script) hands over to :mod:`ember.commands.main`,
which parses and dispatches. One module per command (``run`` for fit /
validate / test / predict, ``config``, ``plugins``, ``checkpoint``, ``plot``,
``export``, ``new``), plus ``common``, ``help`` and ``errors`` which they
share, and ``registry``, through which plugins add commands (the
``add_commands`` hook). Nothing here is imported by the kernel, and nothing
heavy is imported at start: ``ember --help`` imports no torch.
"""
