"""ember's built-in loggers.

Each module is also a plugin (see ``ember.plugin_manager.BUILTIN_PLUGINS``)
that registers its logger by name, so stack files can ask for it.
"""

from ember.plugins.loggers.csv_logger import CSVLogger

__all__ = ["CSVLogger"]
