"""The open core: how distill talks to any model and any data (model I/O, teacher sources)."""
