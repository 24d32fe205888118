"""`distill report RUN_DIR [RUN_DIR ...]`: the command function, registered by `distill.cli`.

    distill report runs/mine                          # runs/mine/report.html, linked from runs/mine/report.md
    distill report runs/a runs/b runs/fit -o cmp.html --theme dark

Kept apart from cli.py so that the command can be tested on a small typer app of its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def report(
    run_dirs: List[Path] = typer.Argument(..., help="run folders, distill fit folders, export or diffusion sample folders"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the HTML file (default: <folder>/report.html for one "
                                       "folder, ./report.html for several)"),
    theme: str = typer.Option("auto", help="the page's first theme: auto (the system's), light or dark; a button switches"),
    title: str = typer.Option("distill report", help="the page's title"),
) -> None:
    """Write one self-contained HTML page (plots, tables, Pareto fronts; no external requests) for the folders."""
    from distill.report.html import link_from_markdown, write_html_report

    target = out or (run_dirs[0] / "report.html" if len(run_dirs) == 1 else Path("report.html"))
    try:
        path = write_html_report(run_dirs, target, title=title, theme=theme)
    except (ValueError, OSError, ModuleNotFoundError) as exc:  # a wrong folder, a damaged file, no matplotlib
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for folder in run_dirs:  # each folder's report.md links the page when the page sits in that folder
        if path.parent.resolve() == folder.resolve():
            link_from_markdown(folder / "report.md", path)
    typer.echo(f"Report: {path}")


__all__ = ["report"]
