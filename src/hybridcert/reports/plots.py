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
    ax.set_ylim(0, 1)
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
