"""ember-jsonl: metrics as JSON Lines, one object per ``log_metrics`` call.

::

    import ember
    from ember_jsonl import JSONLinesLogger, read_run

    trainer = ember.Trainer(logger=JSONLinesLogger(save_dir="runs"))
    ...
    records = read_run(trainer.logger.log_dir)

or, in a stack file, ``[[loggers]] name = "jsonl"``.
"""

from __future__ import annotations

from ember_jsonl.logger import HPARAMS_FILE, METRICS_FILE, JSONLinesLogger, read_run

__version__ = "0.1.0"

__all__ = ["HPARAMS_FILE", "METRICS_FILE", "JSONLinesLogger", "__version__", "read_run"]
