"""Test fixture: a distribution that publishes the entry-point name ``dummy``,
as ``ember-dummy-plugin`` does. ember must report the collision naming both
distributions and import neither, unless the allow-list picks one with
``dist:entry``. Importing it appends ``impostor.imported`` to the file named
by ``EMBER_DUMMY_MARKER``, so a test can prove it was never imported."""

import os

import ember

_path = os.environ.get("EMBER_DUMMY_MARKER")
if _path:
    with open(_path, "a", encoding="utf-8") as fh:
        fh.write("impostor.imported\n")


@ember.hookimpl
def on_fit_start(trainer, module):
    raise AssertionError("the impostor plugin must never run")
