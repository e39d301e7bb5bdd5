"""ember's built-in plugins.

Each module here is a plugin written against the same public hooks and
registries a third-party distribution uses; the kernel registers them from
``ember.plugin_manager.BUILTIN_PLUGINS``.
"""
