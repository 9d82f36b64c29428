"""Pictures of the event history (matplotlib, written as PNG)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from edgetl.errors import EdgetlError

BIN_CHOICES = (60, 300, 900, 3600, 6 * 3600, 86400)  # seconds; the first giving <= 60 bars is used


def plot_events(rows: list[dict[str, Any]], out: Path, title: str = "events") -> Path:
    """Stacked bars of events per time bin by class (unknown objects in black), and below them the event
    count per device (top 30) so a noisy camera stands out."""
    if not rows:
        raise EdgetlError("no events match the filters; nothing to plot")
    try:
        import matplotlib
    except ImportError as exc:  # a host extra: `edgetl[fleet]` alone does not bring it
        raise EdgetlError("--plot needs matplotlib: pip install matplotlib (or 'edgetl[train]')") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [r["time"] for r in rows if r["time"] is not None]
    span = max(times) - min(times) if times else 0
    width = next((b for b in BIN_CHOICES if span / b <= 60), BIN_CHOICES[-1])
    start = min(times) // width * width
    classes = sorted({"unknown" if r["unknown"] else str(r["label"]) for r in rows})
    counts: dict[str, Counter] = {c: Counter() for c in classes}
    for r in rows:
        if r["time"] is not None:
            counts["unknown" if r["unknown"] else str(r["label"])][int((r["time"] - start) // width)] += 1
    n_bins = int((max(times) - start) // width) + 1
    x = [datetime.fromtimestamp(start + i * width) for i in range(n_bins)]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 7), gridspec_kw={"height_ratios": [3, 2]})
    bottom = [0] * n_bins
    for c in classes:
        heights = [counts[c][i] for i in range(n_bins)]
        ax.bar(x, heights, width=width / 86400 * 0.9, bottom=bottom, label=c, align="edge",
               color="black" if c == "unknown" else None)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_title(f"{title}: {len(rows)} events, bins of {_human(width)}")
    ax.set_ylabel("events")
    ax.legend(ncol=min(len(classes), 6), fontsize=8)
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)  # (autofmt_xdate would hide them: 2 panels)
    per_device = Counter(r["device_id"] for r in rows).most_common(30)
    ax2.bar([d for d, _ in per_device], [n for _, n in per_device], color="tab:gray")
    ax2.set_ylabel("events per device")
    ax2.tick_params(axis="x", labelrotation=60, labelsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _human(seconds: int) -> str:
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"
