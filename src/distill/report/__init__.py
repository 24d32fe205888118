"""Run reports: Markdown tables and plots."""
