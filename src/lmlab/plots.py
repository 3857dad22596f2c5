"""Figures written as PNG files with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lmlab import checkpoint
from lmlab.errors import CheckpointError


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | Path) -> Path:
    """Lay out ``fig``, write it to ``out`` as PNG (creating the folder) and close it."""
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Training loss and every validation metric against the step, one panel per metric."""
    records = checkpoint.read_metrics(run_dir)
    train = [r for r in records if r.get("split") == "train" and "loss" in r]
    val = [r for r in records if r.get("split") == "val"]
    if not train and not val:
        raise CheckpointError(f"{run_dir}/metrics.jsonl holds no training records yet")
    val_keys = sorted({k for r in val for k, v in r.items() if k.startswith("val_") and isinstance(v, int | float)})
    panels = ["loss"] + [k for k in val_keys if k != "val_loss"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, key in zip(axes[0], panels, strict=True):
        if key == "loss":
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
            pts = [r for r in val if "val_loss" in r]
            if pts:
                ax.plot([r["step"] for r in pts], [r["val_loss"] for r in pts], "o-", label="val loss")
        else:
            pts = [r for r in val if key in r]
            ax.plot([r["step"] for r in pts], [r[key] for r in pts], "o-", label=key)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, Path(out) if out else Path(run_dir) / "curves.png")


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], out: str | Path) -> Path:
    """A confusion-matrix heat map with counts (rows: true label, columns: prediction)."""
    plt = _pyplot()
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max(max(row) for row in matrix) or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(matrix[i][j]), ha="center", va="center", color="white" if matrix[i][j] > top / 2 else "black")
    return save_figure(fig, out)
