"""Test fixture: implements ``on_train_batch_ends`` (the hook is
``on_train_batch_end``). Registering it must fail with an error naming the
real hook, and ember must carry on without it."""

import ember


@ember.hookimpl
def on_train_batch_ends(trainer, module, outputs, batch, batch_idx):
    raise AssertionError("a misspelled hook must never be called")
