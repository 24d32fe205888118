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
- a diffusion sample folder (``samples.png`` + ``report.md`` of ``distill diffusion sample``): the grid
  and the metrics table per step count;
- an export folder (``*/card.json`` of ``distill export``): the per-target table.

Across folders (several folders, or one run with exported variants): accuracy vs latency and accuracy
vs size of every student, exported variant and ``distill fit`` candidate, the teachers beside them,
the Pareto front of the students drawn and the chosen candidate marked, and the table of all points.

Missing or non-finite numbers show as "-". Light and dark themes follow the system (or ``theme``) and
a button switches them. The ``fit.json`` schema read here is in docs/report.md.
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

from distill.report.markdown import COLUMNS, human_bytes, read_generations

SKIP_KEYS = {"step", "epoch", "split", "lr", "samples_per_s"}

STYLE = """
:root { --bg: #ffffff; --fg: #1b1f24; --muted: #5b6470; --line: #d0d7de; --accent: #0969da; --card: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root:not([data-theme=light]) { --bg: #0d1117; --fg: #e6edf3; --muted: #9aa4af;
  --line: #30363d; --accent: #58a6ff; --card: #161b22; } :root:not([data-theme=light]) svg.plot { filter: invert(0.92) hue-rotate(180deg); } }
:root[data-theme=dark] { --bg: #0d1117; --fg: #e6edf3; --muted: #9aa4af; --line: #30363d; --accent: #58a6ff; --card: #161b22; }
:root[data-theme=dark] svg.plot { filter: invert(0.92) hue-rotate(180deg); }  /* plots only: sample grids keep their pixels */
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
    """A number formatted; anything else (missing, NaN, inf, a string where a number belongs) is "-"."""
    number = _number(value)
    if number is None:
        return "-"
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


def _percent(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{100 * number:.2f}%"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash: the rest still reports
            if isinstance(record, dict):
                records.append(record)
    return records


def _read_dict(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when absent, damaged or not an object (the rest still reports)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _cards(folder: Path) -> list[dict[str, Any]]:
    return [card for card in (_read_dict(path) for path in sorted(folder.glob("*/card.json"))) if card is not None]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------------------------- runs
def _series(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    return [(_number(r.get("step")), _number(r.get(key))) for r in records
            if _number(r.get("step")) is not None and _number(r.get(key)) is not None]


def _curves(records: list[dict[str, Any]]) -> str:
    train = [r for r in records if r.get("split") == "train"]
    test = [r for r in records if r.get("split") == "test"]
    parts = []
    keys = sorted({k for r in train for k, v in r.items() if k not in SKIP_KEYS and _number(v) is not None})
    if any(_series(train, key) for key in keys):
        figure, axis = _figure("training loss per term", "optimiser step", "loss (window mean)")
        for key in keys:
            if points := _series(train, key):
                axis.plot(*zip(*points), label=key, linewidth=1.6 if key == "loss" else 1.0,
                          marker="o" if len(points) <= 20 else None, markersize=3)  # a short run: points, not lines
        axis.legend(fontsize=8)
        parts.append(f"<div>{_svg(figure)}</div>")
    held = [key for key in ("accuracy", "agreement", "cosine_to_teacher", "kl_to_teacher") if _series(test, key)]
    if held:
        figure, axis = _figure("held-out metrics over training", "optimiser step", "value")
        for key in held:
            axis.plot(*zip(*_series(test, key)), marker="o", label=key)
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
            elif fmt.endswith("%}"):
                line.append(_percent(value))
            else:
                line.append(_cell(value, fmt))
        cells.append(line)
    return _table(["model"] + [header for _, header, _ in columns], cells)


def _export_table(cards: list[dict[str, Any]]) -> str:
    if not cards:
        return ""
    rows = []
    for card in cards:
        parity, timing = _dict(card.get("parity")), _dict(card.get("latency"))
        rows.append([html.escape(f"{card.get('target', '-')}-{card.get('precision', '-')}"),
                     _cell(_dict(card.get("artifact")).get("bytes"), "{:,}"), _cell(parity.get("max_abs_diff"), "{:.2g}"),
                     _percent(parity.get("agreement")), _percent(_dict(card.get("accuracy")).get("accuracy")),
                     _cell(timing.get("b1_ms"), "{:.4f}"), _cell(timing.get("b64_per_sample_ms"), "{:.5f}"),
                     html.escape(str(card.get("status", "-")))])
    return ("<h3>Exported variants</h3>" + _table(["variant", "bytes", "max |diff| vs eager", "agreement", "accuracy",
                                                    "ms (b=1)", "ms/sample (b=64)", "status"], rows))


def _run_section(folder: Path) -> str:
    name = folder.name
    parts = [f"<h2>{html.escape(name)} <span class=muted>(run)</span></h2>", f"<p class=muted>{html.escape(str(folder))}</p>"]
    eval_path = folder / "eval.json"
    if eval_path.is_file():
        metrics = _read_dict(eval_path)
        parts.append(_eval_table(metrics, name) if metrics is not None
                     else f"<p class=muted>{html.escape(str(eval_path))} is not a JSON object</p>")
    samples = read_generations(folder)
    if samples is not None:  # a token run: greedy continuations of held-out prompts
        names = list(samples["generations"])
        rows = [[html.escape(str(prompt)), html.escape(str(reference))]
                + [html.escape(str(samples["generations"][name][i])) for name in names]
                for i, (prompt, reference) in enumerate(zip(samples["prompts"], samples["references"]))]
        parts.append(f"<h3>Sample generations <span class=muted>(greedy, at most {html.escape(str(samples.get('max_new_tokens', '?')))} "
                     "new tokens)</span></h3>" + _table(["prompt", "held-out text"] + names, rows))
    if (folder / "metrics.jsonl").is_file():
        parts.append(_curves(_read_jsonl(folder / "metrics.jsonl")))
    if (folder / "tensorboard").is_dir():  # train.tensorboard: the same records as TensorBoard scalars
        parts.append(f"<p class=muted>TensorBoard: <code>tensorboard --logdir {html.escape(str(folder / 'tensorboard'))}"
                     "</code></p>")
    parts.append(_export_table(_cards(folder / "export")))
    return "\n".join(parts)


# ------------------------------------------------------------------------- trade-offs (Pareto plots)
def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher score (y) at once."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def _point(label: str, kind: str, accuracy: Any, latency_ms: Any, size: Any, chosen: bool = False) -> dict[str, Any]:
    """One model on the trade-off plots; kind: student, variant (exported), candidate (distill fit) or teacher."""
    return {"label": label, "kind": kind, "accuracy": _number(accuracy), "latency_ms": _number(latency_ms),
            "bytes": _number(size), "chosen": bool(chosen)}


KINDS = {"candidate": ("o", "#8a94a0", "fit candidates"), "student": ("o", "#0969da", "students"),
         "variant": ("s", "#8250df", "exported variants"), "teacher": ("D", "#1a7f37", "teachers")}
AXES = {"latency_ms": "latency", "bytes": "size"}


def _tradeoff(points: list[dict[str, Any]], key: str, xlabel: str, ylabel: str, budget: Any = None) -> tuple[str, set[int]]:
    """One accuracy-vs-``key`` plot (SVG) and the indices on the students' Pareto front; teachers are drawn,
    not part of the front (the reference the students are measured against)."""
    plotted = [(i, p[key], p["accuracy"]) for i, p in enumerate(points) if p[key] is not None and p["accuracy"] is not None]
    students = [(i, x, y) for i, x, y in plotted if points[i]["kind"] != "teacher"]
    if not students:
        return "", set()
    figure, axis = _figure(f"{ylabel.split(' ')[0]} vs {AXES[key]}", xlabel, ylabel)
    for kind, (marker, color, label) in KINDS.items():
        group = [(x, y) for i, x, y in plotted if points[i]["kind"] == kind]
        if group:
            axis.scatter(*zip(*group), marker=marker, color=color, label=label, zorder=2)
    front = {students[j][0] for j in pareto_front([(x, y) for _, x, y in students])}
    axis.plot(*zip(*sorted((x, y) for i, x, y in students if i in front)), color="#0969da", linewidth=1.2,
              label="Pareto front", zorder=1)
    for i, x, y in plotted:
        if points[i]["chosen"]:
            axis.scatter([x], [y], s=160, marker="*", color="#d1242f", zorder=3, label=f"chosen: {points[i]['label']}")
        if len(plotted) <= 12:
            axis.annotate(points[i]["label"], (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    if _number(budget) is not None:
        axis.axvline(budget, color="#d1242f", linestyle="--", linewidth=1, label="budget")
    xs = [x for _, x, _ in plotted]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # log only where the range needs it (readable ticks)
        axis.set_xscale("log")
    axis.legend(fontsize=8)
    return f"<div>{_svg(figure)}</div>", front


def _fit_record(folder: Path) -> dict[str, Any]:
    path = folder / "fit.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the fit folder is damaged") from None
    if not isinstance(record, dict) or not isinstance(record.get("candidates", []), list) \
            or not all(isinstance(c, dict) for c in record.get("candidates", [])):
        raise ValueError(f"{path} is not a distill fit record: an object with a list of candidate objects under "
                         "'candidates' (see docs/report.md)")
    return record


def _parameters(entry: dict[str, Any]) -> Any:
    """Parameter count: ``parameters``, or ``params`` where that is a number (``params`` of fit.py is the family's dict)."""
    return entry.get("parameters", entry.get("params") if _number(entry.get("params")) is not None else None)


def _fit_points(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The fit's trained candidates (score: test accuracy for the chosen one, else the last validation rung's) and teacher."""
    batch = record.get("batch", 1)
    suffix = f" (b={batch})" if batch not in (1, None) else ""
    points = []
    for c in record.get("candidates") or []:
        scores = [s for s in (c.get("scores") or []) if _number(s) is not None] if isinstance(c.get("scores"), list) else []
        score = c.get("accuracy") if c.get("chosen") or not scores else scores[-1]
        points.append(_point(f"{c.get('name', '-')}{suffix}", "candidate", score, c.get("latency_ms"), c.get("bytes"),
                             bool(c.get("chosen"))))
    teacher = _dict(record.get("teacher"))
    if teacher:
        points.append(_point(f"{teacher.get('name', 'teacher')}{suffix}", "teacher", teacher.get("accuracy"),
                             teacher.get("latency_ms"), teacher.get("bytes")))
    return points


def _fit_section(folder: Path, record: dict[str, Any]) -> str:
    candidates, teacher, budget = record.get("candidates") or [], _dict(record.get("teacher")), _dict(record.get("budget"))
    metric = str(record.get("metric") or "accuracy")
    points = _fit_points(record)
    plots = [_tradeoff(points, "latency_ms", f"latency (ms per batch of {record.get('batch', 1)}, {record.get('target')})",
                       f"{metric} (validation; chosen: test)", budget.get("max_latency_ms"))[0],
             _tradeoff(points, "bytes", "deployed size (bytes)", f"{metric} (validation; chosen: test)",
                       budget.get("max_bytes"))[0]]
    rows, chosen = [], []
    for c in sorted(candidates, key=lambda c: (_number(c.get("latency_ms")) or 0.0)):
        scores = c.get("scores") if isinstance(c.get("scores"), list) else []
        rows.append([html.escape(str(c.get("name", "-"))), _cell(_parameters(c), "{:,}"),
                     _cell(c.get("latency_ms"), "{:.4f}"), _cell(c.get("bytes"), "{:,}"), html.escape(str(c.get("stage", "-"))),
                     " / ".join(_percent(s) for s in scores if _number(s) is not None) or "-", _percent(c.get("accuracy"))])
        chosen.append(bool(c.get("chosen")))
    if teacher:
        rows.insert(0, [html.escape(str(teacher.get("name", "teacher"))), _cell(_parameters(teacher), "{:,}"),
                        _cell(teacher.get("latency_ms"), "{:.4f}"), _cell(teacher.get("bytes"), "{:,}"), "-", "-",
                        _percent(teacher.get("accuracy"))])
        chosen.insert(0, False)
    winner = _dict(record.get("winner"))
    limits = " and ".join(text for text in (
        f"&le; {budget['max_latency_ms']:g} ms" if _number(budget.get("max_latency_ms")) is not None else "",
        f"&le; {int(budget['max_bytes']):,} bytes" if _number(budget.get("max_bytes")) is not None else "") if text)
    summary = (f"target <b>{html.escape(str(record.get('target', '-')))}</b>, batch {_cell(record.get('batch'))}, "
               f"budget {limits or '-'}; chosen <b>{html.escape(str(winner.get('name', '-')))}</b>, test {html.escape(metric)} "
               f"{_percent(winner.get('accuracy'))}, {_cell(winner.get('latency_ms'), '{:.4f}')} ms and "
               f"{_cell(winner.get('bytes'), '{:,}')} bytes after export"
               + (f"; fit took {record['seconds']:.0f} s" if _number(record.get("seconds")) is not None else ""))
    return "\n".join([f"<h2>{html.escape(folder.name)} <span class=muted>(distill fit)</span></h2>", f"<p>{summary}</p>",
                      f'<div class="plots">{"".join(plots)}</div>',
                      _table(["candidate", "parameters", "ms / batch", "bytes", "stage", "validation by rung",
                              f"test {metric}"], rows, chosen)])


def _run_points(folder: Path) -> list[dict[str, Any]]:
    """A run's teacher and student (eager: latency at batch 1, file size) and each exported variant (its card)."""
    name, points = folder.name, []
    metrics = _read_dict(folder / "eval.json") or {}
    teacher = _dict(metrics.get("teacher_metrics"))
    if teacher:
        points.append(_point(f"teacher of {name}", "teacher", teacher.get("accuracy"), teacher.get("latency_b1_ms"),
                             teacher.get("file_bytes")))
    if metrics:
        points.append(_point(name, "student", metrics.get("accuracy"), metrics.get("latency_b1_ms"), metrics.get("file_bytes")))
    return points + _card_points(folder / "export", name)


def _card_points(folder: Path, name: str) -> list[dict[str, Any]]:
    return [_point(f"{name}/{card.get('target', '-')}-{card.get('precision', '-')}", "variant",
                   _dict(card.get("accuracy")).get("accuracy"), _dict(card.get("latency")).get("b1_ms"),
                   _dict(card.get("artifact")).get("bytes")) for card in _cards(folder)]


def _comparison_section(points: list[dict[str, Any]]) -> str:
    ylabel = "accuracy (held-out)"
    latency, on_latency_front = _tradeoff(points, "latency_ms", "latency (ms per call at batch 1; fit: its batch)", ylabel)
    size, on_size_front = _tradeoff(points, "bytes", "size (bytes: file, artifact or deployed)", ylabel)
    rows = [[html.escape(p["label"]), p["kind"], _percent(p["accuracy"]), _cell(p["latency_ms"], "{:.4f}"),
             _cell(p["bytes"], "{:,}"), "yes" if i in on_latency_front else "-", "yes" if i in on_size_front else "-"]
            for i, p in enumerate(points)]
    return ("<h2>Across folders <span class=muted>(accuracy vs latency and size)</span></h2>"
            f'<div class="plots">{latency}{size}</div>'
            + _table(["model", "kind", "accuracy", "ms (b=1)", "bytes", "on latency front", "on size front"], rows,
                     [p["chosen"] for p in points]))


# ------------------------------------------------------------------------------------ other folders
def _markdown_tables(text: str) -> str:
    """The pipe tables of a Markdown text as HTML tables (cells as plain text)."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip().startswith("|"):
            current.append(line.strip())
        elif current:
            blocks.append(current)
            current = []
    tables = []
    for block in blocks:
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in block
                if not re.fullmatch(r"\|[\s:|-]*\|?", line)]
        if rows:
            tables.append(_table(rows[0], [[html.escape(cell) for cell in row] for row in rows[1:]]))
    return "".join(tables)


def _samples_section(folder: Path) -> str:
    image = base64.b64encode((folder / "samples.png").read_bytes()).decode()
    parts = [f"<h2>{html.escape(folder.name)} <span class=muted>(diffusion samples)</span></h2>",
             f'<img class="samples" alt="sample grid" style="max-width:100%" src="data:image/png;base64,{image}">']
    if (folder / "report.md").is_file():
        text = (folder / "report.md").read_text(encoding="utf-8", errors="replace")
        command = next((line for line in text.splitlines() if line.startswith("Command:")), "")
        if command:
            parts.insert(1, f"<p class=muted>{html.escape(command.replace('`', ''))}</p>")
        parts.append(_markdown_tables(text))
    return "\n".join(parts)


def _kind(folder: Path) -> str:
    """fit, run, samples or export; a clear error for anything else."""
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder (give a run folder, a distill fit folder, an export folder "
                                "or a diffusion sample folder)")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a folder: give the run folder that holds it")
    if (folder / "fit.json").is_file():
        return "fit"
    if (folder / "metrics.jsonl").is_file() or (folder / "eval.json").is_file():
        return "run"
    if (folder / "samples.png").is_file():
        return "samples"
    if any(folder.glob("*/card.json")):
        return "export"
    raise ValueError(f"{folder} is not a distill folder: no eval.json or metrics.jsonl (a run), fit.json (distill fit), "
                     "samples.png (distill diffusion sample) or */card.json (distill export)")


def section(folder: str | Path) -> str:
    """The HTML section for one folder (a run, a fit folder, an export folder or a diffusion sample folder)."""
    folder = Path(folder)
    kind = _kind(folder)
    if kind == "fit":
        record = _fit_record(folder)
        parts = [_fit_section(folder, record)]
        winner = Path(str(_dict(record.get("winner")).get("run_dir") or ""))
        if winner.name and (folder / winner.name).is_dir():
            parts.append(_run_section(folder / winner.name))
        return "\n".join(parts)
    if kind == "run":
        return _run_section(folder)
    if kind == "samples":
        return _samples_section(folder)
    return f"<h2>{html.escape(folder.name)} <span class=muted>(export)</span></h2>" + _export_table(_cards(folder))


def tradeoff_points(folder: str | Path) -> list[dict[str, Any]]:
    """The models a folder contributes to the across-folders plots (label, kind, accuracy, latency_ms, bytes, chosen)."""
    folder = Path(folder)
    kind = _kind(folder)
    if kind == "fit":
        return _fit_points(_fit_record(folder))
    if kind == "run":
        return _run_points(folder)
    return _card_points(folder, folder.name) if kind == "export" else []


THEMES = ("auto", "light", "dark")


def write_html_report(folders: Iterable[str | Path], out: str | Path, *, title: str = "distill report",
                      theme: str = "auto") -> Path:
    """Write one self-contained page for ``folders`` to ``out``; returns ``out``.

    ``theme``: ``auto`` (the system's), ``light`` or ``dark`` at first; the page's button switches.
    The across-folders plots come first when the folders hold two or more students (several runs, a
    run with exported variants, fit candidates beside runs); one fit folder has its own.
    """
    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("give at least one folder to report on")
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {theme!r}")
    for folder in folders:  # every folder checked before anything is drawn
        _kind(folder)
    body = "\n".join(section(folder) for folder in folders)
    points = [point for folder in folders for point in tradeoff_points(folder)]
    students = [p for p in points if p["kind"] != "teacher" and p["accuracy"] is not None
                and (p["latency_ms"] is not None or p["bytes"] is not None)]
    if len(students) >= 2 and not (len(folders) == 1 and _kind(folders[0]) == "fit"):
        body = _comparison_section(points) + "\n" + body
    page = (f"<!doctype html><html lang=en{'' if theme == 'auto' else f' data-theme={theme}'}><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width'>"
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


__all__ = ["THEMES", "link_from_markdown", "pareto_front", "section", "tradeoff_points", "write_html_report"]
