"""Pictures of a run (matplotlib, headless): per-VM throughput over device time with the
data-path changes, faults and migration phases marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPAN_COLOURS = {"precopy": "#cfe3f7", "paused": "#f7c6c6", "forwarding": "#d9f0d3"}


def timeline(path: Path, tl, marks, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = np.asarray(tl.t_us, np.float64)
    if len(t) > 1:
        for name, series in sorted(tl.frames.items()):
            rate = np.diff(np.asarray(series, np.float64)) / np.diff(t)  # frames per µs = Mpps
            ax.step(t[1:] / 1000, rate, where="pre", label=name, linewidth=1.2)
    seen = set()
    for m in marks:
        if m.t1_us is not None:
            ax.axvspan(m.t0_us / 1000, m.t1_us / 1000, color=SPAN_COLOURS.get(m.kind, "#eeeeee"),
                       alpha=0.8, zorder=0, label=m.kind if m.kind not in seen else None)
            seen.add(m.kind)
        else:
            ax.axvline(m.t0_us / 1000, color="red" if m.kind == "fault" else "grey",
                       linestyle="--", linewidth=0.8)
            ax.text(m.t0_us / 1000, ax.get_ylim()[1] * 0.97, " " + m.label, rotation=90,
                    va="top", fontsize=7, color="red" if m.kind == "fault" else "dimgrey")
    ax.set_xlabel("device time (ms)")
    ax.set_ylabel("frames received (Mpps, device time)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bars(path: Path, title: str, labels: list[str], values: list[float], ylabel: str,
         baseline: float | None = None) -> Path:
    """One bar per measurement, with its value on it; `baseline` drawn as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(labels)), 4))
    drawn = ax.bar(labels, values, color="#4c72b0")
    ax.bar_label(drawn, fmt="%.3g", fontsize=8)
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="baseline")
        ax.legend(fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8, rotation=20)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
