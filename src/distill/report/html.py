"""One self-contained HTML page for one or more run folders: `distill report RUN_DIR [RUN_DIR ...]`.

Everything is inline (CSS, a few lines of JS for the theme toggle, plots as SVG drawn by
matplotlib, images as data: URLs), so the page opens offline and makes no request. It shows, per
folder, what the folder holds:

- a run (``distill run`` / ``distill.distil``): the eval table (teacher row first), loss curves per
  term (``metrics.jsonl`` train records), held-out metrics over training, and each exported
  variant's card (``export/*/card.json``: size, parity, accuracy, latency);
- a fit folder (``fit.json`` of ``distill fit``): accuracy-vs-latency and accuracy-vs-size of every
  trained candidate and the teacher, the Pareto front drawn, the chosen student marked, and the
  table of all candidates with their stage;
- a diffusion sample folder (``samples.png`` + ``report.md`` of ``distill diffusion sample``): the grid.

Missing or non-finite numbers show as "-". Light and dark themes follow the system and a button.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from distill.report.markdown import COLUMNS, human_bytes

SKIP_KEYS = {"step", "epoch", "split", "lr", "samples_per_s"}

STYLE = """
:root { --bg: #ffffff; --fg: #1b1f24; --muted: #5b6470; --line: #d0d7de; --accent: #0969da; --card: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root:not([data-theme=light]) { --bg: #0d1117; --fg: #e6edf3; --muted: #9aa4af;
  --line: #30363d; --accent: #58a6ff; --card: #161b22; } :root:not([data-theme=light]) svg.plot { filter: invert(0.92) hue-rotate(180deg); } }
:root[data-theme=dark] { --bg: #0d1117; --fg: #e6edf3; --muted: #9aa4af; --line: #30363d; --accent: #58a6ff; --card: #161b22; }
:root[data-theme=dark] svg.plot, :root[data-theme=dark] img.plot { filter: invert(0.92) hue-rotate(180deg); }
body { background: var(--bg); color: var(--fg); font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1.5rem; }
h1, h2, h3 { line-height: 1.2; } h2 { border-bottom: 1px solid var(--line); padding-bottom: .3rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: .8rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: right; } th { background: var(--card); }
td:first-child, th:first-child { text-align: left; }
tr.chosen td { font-weight: 700; color: var(--accent); }
.muted { color: var(--muted); } .plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.plots > div { flex: 1 1 480px; } svg.plot { width: 100%; height: auto; }
#theme { position: fixed; top: 1rem; right: 1rem; background: var(--card); color: var(--fg); border: 1px solid var(--line);
  border-radius: 6px; padding: .3rem .7rem; cursor: pointer; }
"""

SCRIPT = """
const root = document.documentElement, button = document.getElementById("theme");
function current() { return root.dataset.theme || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"); }
function show() { button.textContent = current() === "dark" ? "light theme" : "dark theme"; }
button.addEventListener("click", () => { root.dataset.theme = current() === "dark" ? "light" : "dark"; show(); });
show();
"""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _cell(value: Any, fmt: str = "{:.4g}") -> str:
    number = _number(value)
    if number is None:
        return "-" if not isinstance(value, str) else html.escape(value)
    try:
        return html.escape(fmt.format(int(number) if fmt == "{:,}" else number))
    except (ValueError, TypeError):
        return html.escape(str(value))


def _table(headers: list[str], rows: Iterable[list[str]], chosen: Iterable[bool] = ()) -> str:
    chosen = list(chosen)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr{' class=chosen' if (chosen[i] if i < len(chosen) else False) else ''}>"
                   + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML prolog and doctype (inline SVG)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # matplotlib's RDF block (date, tool)
    return text.replace("<svg", '<svg class="plot" role="img"', 1)


def _figure(title: str, xlabel: str, ylabel: str):
    try:
        import matplotlib
    except ImportError:
        raise ModuleNotFoundError("the HTML report draws its plots with matplotlib: pip install 'distill[plots]'",
                                  name="matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    return figure, axis


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the rest still reports
    return records


# --------------------------------------------------------------------------------------------- runs
def _curves(records: list[dict[str, Any]]) -> str:
    train = [r for r in records if r.get("split") == "train"]
    test = [r for r in records if r.get("split") == "test"]
    parts = []
    if train:
        keys = sorted({k for r in train for k, v in r.items() if k not in SKIP_KEYS and _number(v) is not None})
        figure, axis = _figure("training loss per term", "optimiser step", "loss (window mean)")
        for key in keys:
            points = [(r["step"], _number(r.get(key))) for r in train if _number(r.get(key)) is not None]
            if points:
                axis.plot(*zip(*points), label=key, linewidth=1.6 if key == "loss" else 1.0)
        axis.legend(fontsize=8)
        parts.append(f"<div>{_svg(figure)}</div>")
    held = [key for key in ("accuracy", "agreement", "cosine_to_teacher", "kl_to_teacher")
            if any(_number(r.get(key)) is not None for r in test)]
    if held:
        figure, axis = _figure("held-out metrics over training", "optimiser step", "value")
        for key in held:
            points = [(r["step"], _number(r.get(key))) for r in test if _number(r.get(key)) is not None]
            axis.plot(*zip(*points), marker="o", label=key)
        axis.legend(fontsize=8)
        parts.append(f"<div>{_svg(figure)}</div>")
    return f'<div class="plots">{"".join(parts)}</div>' if parts else '<p class="muted">no metrics logged</p>'


def _eval_table(metrics: dict[str, Any], name: str) -> str:
    rows = []
    teacher = metrics.get("teacher_metrics")
    if isinstance(teacher, dict):
        rows.append((f"teacher ({teacher.get('description', '')})".replace(" ()", ""), teacher))
    rows.append((name, metrics))
    columns = [(key, header, fmt) for key, header, fmt in COLUMNS if any(key in row for _, row in rows)]
    cells = []
    for label, row in rows:
        line = [html.escape(label)]
        for key, _, fmt in columns:
            value = row.get(key)
            if key in ("file_bytes", "quantized_bytes") and _number(value) is not None:
                line.append(html.escape(human_bytes(value)))
            elif fmt.endswith("%}") and _number(value) is not None:
                line.append(f"{100 * value:.2f}%")
            else:
                line.append(_cell(value, fmt if "%" not in fmt else "{:.4g}"))
        cells.append(line)
    return _table(["model"] + [header for _, header, _ in columns], cells)


def _export_table(folder: Path) -> str:
    cards = []
    for path in sorted(folder.glob("*/card.json")):
        try:
            cards.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    if not cards:
        return ""
    rows = []
    for card in cards:
        parity, timing = card.get("parity", {}), card.get("latency", {})
        accuracy = (card.get("accuracy") or {}).get("accuracy")
        rows.append([html.escape(f"{card.get('target')}-{card.get('precision')}"),
                     _cell((card.get("artifact") or {}).get("bytes"), "{:,}"), _cell(parity.get("max_abs_diff"), "{:.2g}"),
                     f"{100 * parity['agreement']:.2f}%" if _number(parity.get("agreement")) is not None else "-",
                     f"{100 * accuracy:.2f}%" if _number(accuracy) is not None else "-",
                     _cell(timing.get("b1_ms"), "{:.4f}"), _cell(timing.get("b64_per_sample_ms"), "{:.5f}"),
                     html.escape(str(card.get("status", "-")))])
    return ("<h3>Exported variants</h3>" + _table(["variant", "bytes", "max |diff| vs eager", "agreement", "accuracy",
                                                    "ms (b=1)", "ms/sample (b=64)", "status"], rows))


def _run_section(folder: Path) -> str:
    name = folder.name
    parts = [f"<h2>{html.escape(name)} <span class=muted>(run)</span></h2>", f"<p class=muted>{html.escape(str(folder))}</p>"]
    eval_path = folder / "eval.json"
    if eval_path.is_file():
        try:
            parts.append(_eval_table(json.loads(eval_path.read_text()), name))
        except json.JSONDecodeError:
            parts.append(f"<p class=muted>{html.escape(str(eval_path))} is not valid JSON</p>")
    if (folder / "metrics.jsonl").is_file():
        parts.append(_curves(_read_jsonl(folder / "metrics.jsonl")))
    parts.append(_export_table(folder / "export"))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- fit
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher score (y) at once."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def _fit_section(folder: Path, record: dict[str, Any]) -> str:
    candidates = record.get("candidates") or []
    teacher = record.get("teacher") or None
    trained = [c for c in candidates if c.get("scores") or c.get("accuracy") is not None]

    def score(c: dict[str, Any]) -> float | None:
        return _number(c.get("accuracy")) if c.get("chosen") else _number((c.get("scores") or [None])[-1])

    plots = []
    for key, label in (("latency_ms", f"latency (ms per batch of {record.get('batch', 1)}, {record.get('target')})"),
                       ("bytes", "deployed size (bytes)")):
        points = [(c, _number(c.get(key)), score(c)) for c in trained]
        points = [(c, x, y) for c, x, y in points if x is not None and y is not None]
        if not points:
            continue
        figure, axis = _figure(f"accuracy vs {key.split('_')[0]}", label, "accuracy (validation; chosen: test)")
        axis.scatter([x for _, x, _ in points], [y for _, _, y in points], color="#8a94a0", label="candidates")
        front = pareto_front([(x, y) for _, x, y in points])
        front_points = sorted((points[i][1], points[i][2]) for i in front)
        axis.plot(*zip(*front_points), color="#0969da", linewidth=1.2, label="Pareto front")
        for c, x, y in points:
            if c.get("chosen"):
                axis.scatter([x], [y], s=140, marker="*", color="#d1242f", zorder=3, label=f"chosen: {c['name']}")
        budget = (record.get("budget") or {}).get("max_latency_ms" if key == "latency_ms" else "max_bytes")
        if _number(budget) is not None:
            axis.axvline(budget, color="#d1242f", linestyle="--", linewidth=1, label="budget")
        if teacher and _number(teacher.get(key)) is not None and _number(teacher.get("accuracy")) is not None:
            axis.scatter([teacher[key]], [teacher["accuracy"]], marker="D", color="#1a7f37", label="teacher (test)")
        xs = [x for _, x, _ in points] + ([teacher[key]] if teacher and _number(teacher.get(key)) else [])
        if min(xs) > 0 and max(xs) / min(xs) > 20:  # log only where the range needs it (readable ticks)
            axis.set_xscale("log")
        axis.legend(fontsize=8)
        plots.append(f"<div>{_svg(figure)}</div>")
    rows, chosen = [], []
    for c in sorted(candidates, key=lambda c: (_number(c.get("latency_ms")) or 0.0)):
        scores = c.get("scores") or []
        rows.append([html.escape(str(c.get("name"))), _cell(c.get("parameters"), "{:,}"),
                     _cell(c.get("latency_ms"), "{:.4f}"), _cell(c.get("bytes"), "{:,}"), html.escape(str(c.get("stage"))),
                     " / ".join(f"{100 * s:.2f}%" for s in scores if _number(s) is not None) or "-",
                     f"{100 * c['accuracy']:.2f}%" if _number(c.get("accuracy")) is not None else "-"])
        chosen.append(bool(c.get("chosen")))
    if teacher:
        rows.insert(0, ["teacher", _cell(teacher.get("parameters"), "{:,}"), _cell(teacher.get("latency_ms"), "{:.4f}"),
                        _cell(teacher.get("bytes"), "{:,}"), "-", "-",
                        f"{100 * teacher['accuracy']:.2f}%" if _number(teacher.get("accuracy")) is not None else "-"])
        chosen.insert(0, False)
    budget = record.get("budget") or {}
    winner = record.get("winner") or {}
    summary = (f"target <b>{html.escape(str(record.get('target')))}</b>, batch {record.get('batch')}, budget "
               + " and ".join(text for text in (
                   f"&le; {budget['max_latency_ms']} ms" if _number(budget.get("max_latency_ms")) is not None else "",
                   f"&le; {int(budget['max_bytes']):,} bytes" if _number(budget.get("max_bytes")) is not None else "") if text)
               + f"; chosen <b>{html.escape(str(winner.get('name', '-')))}</b>, test accuracy "
               + (f"{100 * winner['accuracy']:.2f}%" if _number(winner.get("accuracy")) is not None else "-")
               + f", {_cell(winner.get('latency_ms'), '{:.4f}')} ms and {_cell(winner.get('bytes'), '{:,}')} bytes after export"
               + (f"; fit took {record['seconds']:.0f} s" if _number(record.get("seconds")) is not None else ""))
    return "\n".join([f"<h2>{html.escape(folder.name)} <span class=muted>(distill fit)</span></h2>", f"<p>{summary}</p>",
                      f'<div class="plots">{"".join(plots)}</div>',
                      _table(["candidate", "parameters", "ms / batch", "bytes", "stage", "validation by rung", "test accuracy"],
                             rows, chosen)])


def _samples_section(folder: Path) -> str:
    image = base64.b64encode((folder / "samples.png").read_bytes()).decode()
    return (f"<h2>{html.escape(folder.name)} <span class=muted>(diffusion samples)</span></h2>"
            f'<img class="plot" alt="sample grid" style="max-width:100%" src="data:image/png;base64,{image}">')


def section(folder: str | Path) -> str:
    """The HTML section for one folder (a run, a fit folder, an export folder or a diffusion sample folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give a run folder, a distill fit folder, an export folder "
                                "or a diffusion sample folder)")
    if (folder / "fit.json").is_file():
        try:
            record = json.loads((folder / "fit.json").read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{folder / 'fit.json'} is not valid JSON ({exc}); the fit folder is damaged") from None
        parts = [_fit_section(folder, record)]
        winner = Path(str((record.get("winner") or {}).get("run_dir") or ""))
        if winner.name and (folder / winner.name).is_dir():
            parts.append(_run_section(folder / winner.name))
        return "\n".join(parts)
    if (folder / "metrics.jsonl").is_file() or (folder / "eval.json").is_file():
        return _run_section(folder)
    if (folder / "samples.png").is_file():
        return _samples_section(folder)
    if any(folder.glob("*/card.json")):
        return f"<h2>{html.escape(folder.name)} <span class=muted>(export)</span></h2>" + _export_table(folder)
    raise ValueError(f"{folder} is not a distill folder: no eval.json or metrics.jsonl (a run), fit.json (distill fit), "
                     "samples.png (distill diffusion sample) or */card.json (distill export)")


def write_html_report(folders: Iterable[str | Path], out: str | Path, *, title: str = "distill report") -> Path:
    """Write one self-contained page for ``folders`` to ``out``; returns ``out``."""
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("give at least one folder to report on")
    body = "\n".join(section(folder) for folder in folders)
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<button id=theme type=button>theme</button><h1>{html.escape(title)}</h1>{body}"
            f"<p class=muted>Written by distill report; everything on this page is inline (no requests).</p>"
            f"<script>{SCRIPT}</script></body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


def link_from_markdown(report_md: Path, html_path: Path) -> None:
    """Add a link to the HTML page at the end of a run's report.md (once)."""
    if not report_md.is_file():
        return
    text = report_md.read_text(encoding="utf-8")
    line = f"HTML report (plots, Pareto fronts, export cards): [{html_path.name}]({html_path.name})"
    if line not in text:
        report_md.write_text(text.rstrip("\n") + "\n\n" + line + "\n", encoding="utf-8")


__all__ = ["link_from_markdown", "pareto_front", "section", "write_html_report"]
