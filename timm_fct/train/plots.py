"""Training curves: what people look at first after a run."""
from typing import Mapping, Sequence, Tuple

from matplotlib.figure import Figure


def curves_figure(rows: Sequence[Mapping[str, float]], curves: Sequence[Tuple[str, str]], ylabel: str) -> Figure:
    """One line per (column, label) of the summary rows, against the epoch counted from 1."""
    epochs = [int(r['epoch']) + 1 for r in rows]
    fig = Figure(figsize=(6, 4), dpi=100, layout='tight')
    ax = fig.add_subplot()
    for key, label in curves:
        ax.plot(epochs, [r[key] for r in rows], marker='o' if len(rows) < 30 else None, label=label)
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
