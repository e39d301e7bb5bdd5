"""ember's built-in profilers (``Trainer(profiler="simple" | "advanced" | "pytorch")``).

Each module is also a plugin (see ``ember.plugin_manager.BUILTIN_PLUGINS``)
that registers its profiler under the kind ``"profiler"``.
"""

from ember.plugins.profilers.advanced import AdvancedProfiler
from ember.plugins.profilers.pytorch import TorchProfiler
from ember.plugins.profilers.simple import SimpleProfiler

__all__ = ["AdvancedProfiler", "SimpleProfiler", "TorchProfiler"]
