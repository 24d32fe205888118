"""The model card written beside every variant: ``card.json`` (the record) and ``card.md`` (the same, readable)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.report.markdown import human_bytes


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def card_markdown(card: dict[str, Any]) -> str:
    parity, accuracy, latency, size = card["parity"], card["accuracy"], card["latency"], card["size"]
    tolerance = parity["tolerance"]
    status = card["status"].upper()
    source = card["source"]
    made_from = (f"from `{source['checkpoint']}` ({source['model']}, sha256 {source['sha256'][:12]})"
                 if source.get("checkpoint") else f"from a {source['model']} held in Python (no model file)")
    inputs = "; ".join(f"`{item['name']}` {item['dtype']} {item['shape']}" for item in card["inputs"])
    classes = card["preprocessing"].get("classes")
    output = card["outputs"][0]
    accuracy_row = (f"| accuracy ({accuracy['dataset']} {accuracy['split']}, {accuracy['samples']:,}) | "
                    f"{accuracy['accuracy']:.2%} (eager {accuracy['eager_accuracy']:.2%}) |"
                    if accuracy.get("accuracy") is not None else
                    f"| accuracy | not measured: {accuracy['dataset']} has no labels |")
    agreement = ("rows with " + parity["agreement_rule"]) if parity.get("agreement_rule") else "top-1 agreement"
    lines = [
        f"# {card['name']}: {card['target']} / {card['precision']} ({status})",
        "",
        f"Made by `{card['command']}` on {card['date']} {made_from}.",
        "",
        f"- **Artifact**: `{card['artifact']['file']}` ({human_bytes(size['artifact_bytes'])}), run by "
        f"{card['runtime']['name']} {card['runtime']['version']}" + (f"; {card['runtime']['note']}" if card['runtime'].get('note') else ""),
        f"- **Input{'s' if len(card['inputs']) > 1 else ''}** {inputs}; "
        f"preprocessing: {card['preprocessing']['description']}",
        f"- **Output** `{output['name']}`: {output['dtype']} {output['shape']}"
        + (f" (classes: {', '.join(classes)})" if classes else ""),
        "",
        "| check | value |",
        "|---|---|",
        f"| size | {human_bytes(size['artifact_bytes'])} ({size['fp32_onnx_bytes'] / size['artifact_bytes']:.2f}x smaller than fp32 ONNX) |",
        f"| parity vs eager PyTorch ({parity['samples']:,} held-out samples) | max abs diff {parity['max_abs_diff']:.3g}, "
        f"{agreement} {parity['agreement']:.2%} |",
        f"| tolerance | max abs diff {'-' if tolerance['max_abs_diff'] is None else tolerance['max_abs_diff']}, "
        f"agreement >= {tolerance['min_agreement']:.2%}: {'passed' if parity['passed'] else 'FAILED: ' + '; '.join(parity['failures'])} |",
        accuracy_row,
        f"| latency batch 1 | {_ms(latency.get('b1_ms'))} (eager {_ms(card['eager_latency'].get('b1_ms'))}) |",
        f"| latency batch 64, per sample | {_ms(latency.get('b64_per_sample_ms'))} "
        f"(eager {_ms(card['eager_latency'].get('b64_per_sample_ms'))}) |",
        f"| threads | {latency.get('threads')} |",
        "",
    ]
    if card["status"] != "verified":
        lines += [f"**Refused**: the variant failed its parity tolerance ({'; '.join(parity['failures'])}). "
                  "Re-run with an explicit `--tolerance` / `--min-agreement` to accept it.", ""]
    for note in card.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def write_card(folder: Path, card: dict[str, Any]) -> None:
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (folder / "card.md").write_text(card_markdown(card))


def read_card(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "card.json").read_text())
