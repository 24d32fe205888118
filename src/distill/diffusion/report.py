"""The sample report of ``distill diffusion sample``: one PNG panel per step count, and Markdown."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor


def tile(images: Tensor, columns: int = 8) -> Tensor:
    """(N, C, H, W) -> (rows*H + gaps, columns*W + gaps) grey image in [0, 1] (first channel)."""
    images = images[:, 0]
    low, high = images.amin(), images.amax()
    images = (images - low) / (high - low).clamp(min=1e-8)
    n, h, w = images.shape
    rows = -(-n // columns)
    canvas = torch.ones(rows * (h + 1) - 1, columns * (w + 1) - 1)
    for index in range(n):
        r, c = divmod(index, columns)
        canvas[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = images[index]
    return canvas


def write_sample_grid(samples: dict[int, Tensor], path: str | Path, title: str = "") -> Path:
    """One panel per step count: an image grid, or a scatter plot for 2-D points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.4), squeeze=False)
    for ax, (steps, x) in zip(axes[0], sorted(samples.items())):
        if x.ndim == 2:
            ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
        else:
            ax.imshow(tile(x[:64]).numpy(), cmap="gray", interpolation="nearest")
            ax.axis("off")
        ax.set_title(f"{steps} step{'s' if steps > 1 else ''}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sample_report(model_path: str, spec: dict, rows: dict[int, dict], grid_name: str, command: str) -> str:
    """Markdown: the model, the command, the grid and a metrics row per step count."""
    metric_names = sorted({k for row in rows.values() for k in row})
    lines = [f"# Samples from `{model_path}`", "", f"Command: `{command}`", "",
             f"Model: {spec['kind']} ({spec['net']['name']}), data `{spec.get('data', '?')}`, "
             f"prediction {spec['denoiser']['prediction']}, schedule {spec['denoiser']['schedule']['name']}.", "",
             f"![samples]({grid_name})", "", "| steps | " + " | ".join(metric_names) + " |",
             "|---|" + "---|" * len(metric_names)]
    for steps, row in sorted(rows.items()):
        lines.append(f"| {steps} | " + " | ".join(f"{row[k]:.4g}" for k in metric_names) + " |")
    lines += ["", "mmd2: unbiased multi-bandwidth RBF MMD² to held-out data; sliced_w2: sliced 2-Wasserstein; "
              "ms_per_sample: median wall time of a batch, per sample (warm-up excluded)."]
    return "\n".join(lines) + "\n"
