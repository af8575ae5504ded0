"""The PNGs of ``musicidx eval --report``: the confusion matrix, the track embeddings (PCA), the
accuracy and AUROC per orchestration, the novelty of each left-out composer, and the cross-corpus
novelty.  matplotlib is optional (``musicidx[plots]``): :func:`can_plot` asks before any work."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from musicidx.encoder.errors import MusicIdxError, install_hint

from .metrics import ORIGINAL

if TYPE_CHECKING:
    from .cross import CrossReport
    from .report import EvalReport


class PlotError(MusicIdxError):
    """Plots were asked for but matplotlib is missing."""


#: What to install for the plots.
PLOTS_HINT = f"plots need matplotlib: {install_hint('plots')}"


def use_matplotlib() -> None:
    """Select matplotlib's file-only backend; a missing matplotlib is a :class:`PlotError`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError as e:
        raise PlotError(f"{PLOTS_HINT} (or pass --no-plots)") from e


def can_plot(*, required: bool) -> bool:
    """Whether the plots can be drawn, asked before any work: ``False`` when matplotlib is missing,
    or, when they were asked for explicitly (``required``), a :class:`PlotError`."""
    try:
        use_matplotlib()
    except PlotError:
        if required:
            raise
        return False
    return True


def plot_confusion(r: EvalReport, out: Path) -> Path:
    import matplotlib.pyplot as plt

    cm = np.asarray(r.closed["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cm)), r.composers, rotation=30, ha="right")
    ax.set_yticks(range(len(cm)), r.composers)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        f"Grouped {r.folds}-fold CV: balanced acc {r.closed['balanced_accuracy']:.2f}, acc {r.closed['accuracy']:.2f}"
    )
    fig.tight_layout()
    p = out / "confusion_matrix.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def plot_embeddings(r: EvalReport, out: Path) -> Path:
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    assert r.embeddings is not None
    pca = PCA(n_components=2, random_state=0).fit(r.embeddings)
    xy = pca.transform(r.embeddings)
    orch = {v: pca.transform(e) for v, e in r.embeddings_orchestrated.items() if len(e)}
    fig, axes = plt.subplots(1, 2 if orch else 1, figsize=(12 if orch else 6, 5), squeeze=False)
    labels = np.asarray(r.embedding_labels)
    held = np.zeros(len(labels), bool) if r.embedding_held_out is None else r.embedding_held_out
    ax = axes[0, 0]
    for i, c in enumerate(r.composers):
        color = f"C{i}"
        m = labels == c
        ax.scatter(xy[m & ~held, 0], xy[m & ~held, 1], s=12, color=color, alpha=0.35, label=f"{c} ({m.sum()})")
        ax.scatter(xy[m & held, 0], xy[m & held, 1], s=28, color=color, edgecolors="k", linewidths=0.6)
    ax.legend(title="faint: training works, outlined: held-out works", fontsize=8, title_fontsize=8)
    ax.set_title("Track embeddings as written (fold 0 encoder, mean of clips), PCA", fontsize=10)
    if orch:
        ax = axes[0, 1]
        markers = dict(zip(orch, "s^Dv*P"))
        held_labels = labels[held]
        ax.scatter(xy[~held, 0], xy[~held, 1], s=8, color="0.85", label="training works as written")
        for i, c in enumerate(r.composers):
            m = held_labels == c
            ax.scatter(xy[held][m, 0], xy[held][m, 1], s=26, color=f"C{i}", marker="o", edgecolors="k", linewidths=0.5)
            for v, pts in orch.items():
                ax.scatter(pts[m, 0], pts[m, 1], s=22, color=f"C{i}", marker=markers[v], alpha=0.7)
        for v, mk in markers.items():
            ax.scatter([], [], marker=mk, color="0.4", label=v)
        ax.scatter([], [], marker="o", color="0.4", edgecolors="k", label="as written")
        ax.legend(title="held-out works, colour = composer", fontsize=8, title_fontsize=8)
        ax.set_title("The same held-out works re-orchestrated: same colour should stay together", fontsize=10)
    fig.tight_layout()
    p = out / "embeddings_pca.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_orchestrations(r: EvalReport, out: Path) -> Path:
    """Balanced accuracy (closed set) and AUROC (open set) per orchestration, mean and std over
    the training seeds."""
    import matplotlib.pyplot as plt

    views = [ORIGINAL, *r.orchestrations]
    panels = [("closed", "balanced_accuracy", "grouped-CV balanced accuracy")]
    if r.open:
        panels.append(("open", "auroc", "leave-one-composer-out AUROC"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (kind, metric, title) in zip(axes.flat, panels):
        stats = [r.summary[f"{kind}.{v}.{metric}"] for v in views]
        colors = [f"C{i}" for i in range(len(views))]
        ax.bar(views, [s["mean"] for s in stats], yerr=[s["std"] for s in stats], color=colors, capsize=4)
        for i, s in enumerate(stats):
            ax.text(i, s["mean"] + s["std"] + 0.02, f"{s['mean']:.2f}", ha="center", fontsize=8)
        chance = 1.0 / len(r.composers) if kind == "closed" else 0.5
        ax.axhline(chance, color="0.3", linestyle=":", linewidth=1, label=f"chance ({chance:.2f})")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, 1.05)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
    agreement = r.summary.get("closed.agreement")
    extra = f"; agreement across orchestrations {agreement['mean']:.2f}" if agreement else ""
    fig.suptitle(
        f"Held-out tracks asked in other orchestrations (mean ± std over {len(r.seeds)} seed(s)){extra}", fontsize=10
    )
    fig.tight_layout()
    p = out / "orchestrations.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_novelty(r: EvalReport, out: Path) -> Path:
    """One panel per left-out composer: each fold has its own encoder, so its own distance scale
    and threshold; pooling them in one histogram would mix scales."""
    import matplotlib.pyplot as plt

    n = len(r.novelty_loco)
    cols = min(n, 2)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (name, known, unknown), thr in zip(axes.flat, r.novelty_loco, r.thresholds):
        bins = np.linspace(0, max(known.max(), unknown.max(), thr) * 1.05, 30).tolist()
        ax.hist(known, bins=bins, alpha=0.6, density=True, label=f"known composers, held-out works ({len(known)})")
        ax.hist(unknown, bins=bins, alpha=0.6, density=True, label=f"{name}, left out ({len(unknown)})")
        ax.axvline(thr, color="k", linestyle="--", label=f"calibrated threshold {thr:.3f}")
        ax.set_title(f"{name} left out: AUROC {r.open['per_composer'][name]['auroc']:.2f}", fontsize=10)
        ax.set_xlabel("track novelty (k-th neighbour distance, median over clips)", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Leave-one-composer-out novelty: mean AUROC {r.open['mean']['auroc']:.2f}")
    fig.tight_layout()
    p = out / "novelty_hist.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def plot_cross_novelty(report: CrossReport, out: Path) -> Path:
    """The novelty of the known composers' tracks against each new composer's, with the index's
    threshold: one row of dots per group, its median marked."""
    import matplotlib.pyplot as plt

    rows = report.rows
    known = [r["novelty"] for r in rows if r["known"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [("known: " + ", ".join(report.known_composers), known)]
    groups += [(c, [r["novelty"] for r in rows if r["composer"] == c]) for c in report.new_composers]
    jitter = np.random.default_rng(0)
    for i, (_, g) in enumerate(groups, 1):  # one row of dots per group, its median marked
        ax.scatter(g, i + jitter.uniform(-0.15, 0.15, len(g)), s=10, alpha=0.6, color="C0" if i == 1 else "C3")
        ax.plot([np.median(g)] * 2, [i - 0.3, i + 0.3], color="k", linewidth=2)
    ax.set_yticks(range(1, len(groups) + 1), [f"{n} ({len(g)})" for n, g in groups], fontsize=7)
    ax.axvline(report.open["threshold"], color="k", linestyle="--", label="the index's threshold")
    ax.set_xlabel("track novelty")
    ax.set_title(f"Cross-corpus: AUROC known vs new {report.open['auroc']:.2f}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / "cross_novelty.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
