"""Test fixture: implements ``on_fit_start(trainer, modul)``; the hook's
arguments are ``(trainer, module)``. ember must refuse it with a message naming
the hook, its arguments, the closest name, the plugin and its distribution."""

import ember


@ember.hookimpl
def on_fit_start(trainer, modul):
    raise AssertionError("a hook with a wrong argument name must never be called")
