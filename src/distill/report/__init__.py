"""Run reports: Markdown tables and plots (``markdown``), and one self-contained HTML page for run,
fit, export and diffusion sample folders (``html``; ``distill report``, docs/report.md)."""
from distill.report.html import THEMES, pareto_front, tradeoff_points, write_html_report

__all__ = ["THEMES", "pareto_front", "tradeoff_points", "write_html_report"]
