"""One module per `wispgate` command. Each defines ``register(commands)``, which adds its
sub-parser with ``set_defaults(handler=...)``; a handler takes (settings, args) and returns
the exit status. `api.cli` discovers the modules here, so adding a command is adding a file."""
