"""Matplotlib figures (Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybridcert.reports.tables import EPS_GRID, TOKEN_GRID  # noqa: E402


def accuracy_heatmap(acc: np.ndarray, path: Path, title: str, eps_grid=EPS_GRID,
                     token_grid=TOKEN_GRID) -> Path:
    """Certified accuracy over (eps, r) as a heat map: cells and colour bar in percent."""
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    image = ax.imshow(100 * np.asarray(acc), vmin=0, vmax=100, cmap="viridis", origin="lower",
                      aspect="auto")
    ax.set_xticks(range(len(token_grid)), [str(r) for r in token_grid])
    ax.set_yticks(range(len(eps_grid)), [f"{e:g}" for e in eps_grid])
    ax.set_xlabel("substituted tokens r")
    ax.set_ylabel("L2 radius eps")
    ax.set_title(title, fontsize=8, wrap=True)
    for a in range(len(eps_grid)):
        for b in range(len(token_grid)):
            ax.text(b, a, f"{100 * acc[a, b]:.0f}", ha="center", va="center",
                    color="white" if acc[a, b] < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="certified accuracy (%)")
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


def interval_curves(panels, path: Path, title: str, xlabel: str = "L2 radius eps",
                    ylabel: str = "certified rate", reference=None,
                    reference_label: str = "constant classifier") -> Path:
    """One panel per entry of ``panels``: curves with 95 % interval bands and, per panel, the
    sample-size ceiling as dashed vertical lines.

    Parameters
    ----------
    panels : list of dict
        ``{"title": str, "x": array, "curves": [{"label", "mean", "low", "high"}],
        "ceilings": [(x, label)]}``; a ceiling at ``x`` means no input can be certified to
        its right (for the curve named in ``label``).
    reference : float, optional
        Horizontal line (e.g. the constant classifier's certified rate).

    The y axis runs slightly past 100 % so that curves at 100 % stay visible.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), sharey=True,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        x = np.asarray(panel["x"], dtype=float)
        for k, curve in enumerate(panel["curves"]):
            color = f"C{k}"
            ax.plot(x, curve["mean"], marker="o", ms=3, color=color, label=curve["label"],
                    linestyle=curve.get("style", "-"))
            ax.fill_between(x, curve["low"], curve["high"], color=color, alpha=0.15)
        for k, (xc, label) in enumerate(panel.get("ceilings", [])):
            if xc is None or not np.isfinite(xc):
                continue
            ax.axvline(min(xc, x.max() * 1.05), color="grey", linestyle="--", linewidth=1,
                       alpha=1.0 - 0.2 * k, label=f"sample-size ceiling ({label})")
        if reference is not None:
            ax.axhline(reference, color="black", linestyle=":", linewidth=1,
                       label=reference_label)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(x.min() - 0.02, x.max() * 1.05 + 0.01)
        ax.grid(alpha=0.3)
        ax.set_title(panel["title"], fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def grouped_bars(groups, series, path: Path, title: str, ylabel: str = "rate",
                 beyond=None, note: str | None = None) -> Path:
    """Grouped bars with 95 % interval whiskers.

    Parameters
    ----------
    groups : list of str
        Group labels (x axis).
    series : list of dict
        ``{"label", "mean", "low", "high", "hatch" (optional)}``, one value per group.
    beyond : list of bool, optional
        Groups beyond the sample-size ceiling: marked on the axis.
    note : str, optional
        Footnote under the axis (e.g. the ceiling's meaning).
    """
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * (1 + len(series) / 4)), 3.9))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for k, s in enumerate(series):
        mean = np.asarray(s["mean"], dtype=float)
        err = np.vstack([mean - np.asarray(s["low"], float), np.asarray(s["high"], float) - mean])
        ax.bar(x + (k - (len(series) - 1) / 2) * width, np.nan_to_num(mean), width,
               yerr=np.nan_to_num(err), capsize=2, label=s["label"], color=f"C{k}",
               hatch=s.get("hatch"), edgecolor="black" if s.get("hatch") else None,
               linewidth=0.5)
    labels = [g + ("\n(beyond ceiling)" if beyond is not None and beyond[i] else "")
              for i, g in enumerate(groups)]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=9)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6)
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tau_curves(panels, path: Path, title: str, ylabel: str = "certified rate",
               xlabel: str = "detection threshold tau (logit scale)",
               logit: bool = True) -> Path:
    """Operating curves: one panel per entry of ``panels``, rates against the detection
    threshold on a logit axis (both ends of (0, 1) stay readable; ``logit=False``: a linear
    axis, e.g. for a false-flag rate), with 95 % interval bands.

    Parameters
    ----------
    panels : list of dict
        ``{"title": str, "x": taus, "curves": [{"label", "mean", "low", "high", "color",
        "style", "x"}], "marks": [(tau, color)]}``; a curve's own ``x`` (optional) replaces
        the panel's (curves of one panel may be read at different taus); a mark is a dotted
        vertical line (e.g. a calibrated tau).
    """
    def scale(t):
        t = np.asarray(t, dtype=float)
        return np.log10(t / (1 - t)) if logit else t

    # drawn on log10(tau / (1 - tau)) with fixed ticks: matplotlib's logit scale recomputes
    # its ticks at every draw and costs seconds per figure
    ticks = [1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999] if logit else None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), sharey=True,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        x = scale(panel["x"])
        for curve in panel["curves"]:
            color = curve.get("color", "C0")
            cx = scale(curve["x"]) if "x" in curve else x
            ax.plot(cx, curve["mean"], color=color, linestyle=curve.get("style", "-"),
                    linewidth=1.2, label=curve["label"])
            ax.fill_between(cx, curve["low"], curve["high"], color=color, alpha=0.12)
        for tau, color in panel.get("marks", []):
            ax.axvline(float(scale(tau)), color=color, linestyle=":", linewidth=1)
        if ticks is not None:
            ax.set_xticks(scale(ticks), [f"{t:g}" for t in ticks], fontsize=6)
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
        ax.set_title(panel["title"], fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=5.5, loc="lower left")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
