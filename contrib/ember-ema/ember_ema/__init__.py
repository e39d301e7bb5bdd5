"""ember-ema: an exponential moving average of a model's weights, as an ember callback.

::

    import ember
    from ember_ema import EMA

    trainer = ember.Trainer(callbacks=[EMA(decay=0.999)])

or, in a stack file, ``[[callbacks]] name = "ema"``.
"""

from __future__ import annotations

from ember_ema.ema import EMA, load_ema_weights

__version__ = "0.1.0"

__all__ = ["EMA", "__version__", "load_ema_weights"]
