"""``python -m distill ...`` is the ``distill`` command (used by torchrun / accelerate launch)."""
from distill.cli import app

app(prog_name="distill")
