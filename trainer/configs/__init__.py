"""The presets: one module per preset, each with `get_config()` (see `config.get_preset`)."""
