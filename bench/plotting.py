"""Line plots for BENCHMARKS.md, written as PNG with matplotlib's Agg backend (no display on a server).

Plots live in bench/plots/ beside the report (the folder follows the report's location, so a test writing a
report elsewhere never overwrites the committed plots) and are linked by relative path, so it renders on GitHub.
"""
from __future__ import annotations

from pathlib import Path

PLOTS = Path("bench") / "plots"


def line_plot(name: str, panels: list[dict], title: str, report: Path) -> Path:
    """One figure with a panel per dict {"xlabel", "ylabel", "series": {label: (xs, ys)}, "hlines": [y, ...]}.
    Returns the written path: bench/plots/NAME.png next to the ``report`` file."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(report).resolve().parent / PLOTS
    folder.mkdir(parents=True, exist_ok=True)
    width = 5.5 if len(panels) <= 3 else 4.2
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, (xs, ys) in panel["series"].items():
            ax.plot(xs, ys, label=label, linewidth=1.4)
        for y in panel.get("hlines", []):
            ax.axhline(y, color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if panel.get("ylim"):
            ax.set_ylim(*panel["ylim"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def link(path: Path, alt: str) -> str:
    """Markdown image link relative to the repository root (where BENCHMARKS.md is)."""
    return f"![{alt}]({(PLOTS / path.name).as_posix()})"
