"""distill: turn a large teacher into a small, fast student.

The Python API (see the README):

- :func:`distil` — distil a teacher (any ``nn.Module`` or a teacher file) into a student on any
  data (a ``Dataset``, ``DataLoader``, Hugging Face dataset or tensor pair); writes a run folder.
- :func:`save_model` / :func:`load_model` — distill model files, usable by ``distill eval``,
  ``export`` and ``bench``.
- :func:`fit` — the best student of a recipe's family within a latency / size budget on a target,
  found by measuring candidates untrained and successive halving, then trained and exported.
- :func:`load_teacher` — a teacher from a file: a distill model file, a Hugging Face folder, a
  ``.pt``/``.pth`` state dict with its builder, TorchScript or an ExportedProgram.
"""
__version__ = "0.1.0"

__all__ = ["__version__", "distil", "fit", "save_model", "load_model", "load_teacher", "RunResult", "StopTraining"]


def __getattr__(name: str):  # lazy: ``import distill`` stays light (the CLI imports torch only when needed)
    if name in ("distil", "save_model", "load_model"):
        from distill import api

        return getattr(api, name)
    if name == "fit":
        from distill.fitting import fit

        return fit
    if name == "load_teacher":
        from distill.core.teacher import load_teacher

        return load_teacher
    if name == "RunResult":
        from distill.runner import RunResult

        return RunResult
    if name == "StopTraining":
        from distill.training.loop import StopTraining

        return StopTraining
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
