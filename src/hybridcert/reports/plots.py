"""Matplotlib figures (Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybridcert.reports.tables import EPS_GRID, TOKEN_GRID  # noqa: E402


def accuracy_curves(predict, labels, max_tokens, radii, path: Path, title: str,
                    token_grid=TOKEN_GRID, eps_max: float = 1.5) -> Path:
    """Certified accuracy against eps, one curve per r."""
    eps = np.linspace(0, eps_max, 151)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    correct = np.asarray(predict) == np.asarray(labels)
    for r in token_grid:
        acc = [np.mean([correct[i] and r <= max_tokens[i] and radii[i][r] >= e
                        for i in range(len(radii))]) for e in eps]
        ax.plot(eps, acc, label=f"r = {r} tokens")
    ax.set_xlabel("L2 radius eps (pixels in [0, 1])")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(-0.02, 1.03)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_heatmap(acc: np.ndarray, path: Path, title: str, eps_grid=EPS_GRID,
                     token_grid=TOKEN_GRID) -> Path:
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    image = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(len(token_grid)), [str(r) for r in token_grid])
    ax.set_yticks(range(len(eps_grid)), [f"{e:g}" for e in eps_grid])
    ax.set_xlabel("substituted tokens r")
    ax.set_ylabel("L2 radius eps")
    ax.set_title(title, fontsize=8, wrap=True)
    for a in range(len(eps_grid)):
        for b in range(len(token_grid)):
            ax.text(b, a, f"{100 * acc[a, b]:.0f}", ha="center", va="center",
                    color="white" if acc[a, b] < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="certified accuracy")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_curves(rows, table, layout, path: Path, title: str, class_names, ceiling=None,
               points: int = 121) -> Path:
    """Certified accuracy (all labelled inputs, and balanced over classes) against the
    continuous budget, one curve per token budget; the sample-size ceiling as a dashed line.
    The y axis runs slightly past 100% so that curves at 100% stay visible."""
    from hybridcert.reports.tables import class_metrics, grid_mask, rows_regions

    regions = rows_regions(rows, layout.token_blocks, layout.sigmas)
    top = max(layout.continuous[-1] * 1.5, (ceiling or 0) * 1.1, 0.1)
    xs = np.linspace(0, top, points) if layout.sigmas else np.zeros(1)
    block = table["block"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for r in table["tokens"]:
        budgets = [layout.budget(x, block, r) for x in xs]
        metrics = class_metrics(rows, grid_mask(regions, budgets), len(class_names))
        axes[0].plot(xs, metrics["accuracy"], label=f"r = {r}")
        axes[1].plot(xs, metrics["balanced"], label=f"r = {r}")
    for ax, name in zip(axes, ("certified accuracy", "balanced certified accuracy"),
                        strict=True):
        if ceiling is not None:
            ax.axvline(ceiling, color="grey", linestyle="--", linewidth=1,
                       label="sample-size ceiling")
        ax.set_xlabel("L2 radius eps" if layout.axis == "eps" else "joint shift gamma (std)")
        ax.set_ylabel(name)
        ax.set_ylim(-0.02, 1.03)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
