"""Test fixture: a plugin that works, but whose distribution declares
``ember<0.1``. ember must refuse it without importing it (tests look for it
in ``sys.modules``), and load it into an ember inside the range."""

import ember


class OldCompatCallback(ember.Callback):
    pass


@ember.hookimpl
def register_roles(registry):
    registry.add("callback", "oldcompat", OldCompatCallback)
