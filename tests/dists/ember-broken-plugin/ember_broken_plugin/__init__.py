"""Test fixture: importing this plugin fails, as a plugin with a missing
dependency would. ember must report it and carry on."""

raise ImportError("no module named 'not_there'")
