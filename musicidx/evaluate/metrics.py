"""The numbers ``musicidx eval`` reports: closed-set accuracy and its kin, open-set AUROC, FPR at
95 % TPR and OSCR, and the mean and spread over training seeds.  Pure arithmetic on arrays of
labels and novelties; no index, no model."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The orchestration of a file as it is written (its own GM programs).
ORIGINAL = "original"


def open_set_metrics(
    novelty_known: np.ndarray, novelty_unknown: np.ndarray, correct_known: np.ndarray
) -> dict[str, float]:
    """AUROC (unknown = positive, novelty = score), FPR at 95 % TPR on known tracks (the share
    of unknown tracks accepted when 95 % of known tracks are), and OSCR (Dhamija et al. 2018:
    area under correct-classification rate of known vs false-positive rate of unknown)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(novelty_known)), np.ones(len(novelty_unknown))]
    s = np.r_[novelty_known, novelty_unknown]
    auroc = float(roc_auc_score(y, s))
    t95 = np.quantile(novelty_known, 0.95, method="higher")
    fpr95 = float((novelty_unknown <= t95).mean())
    # OSCR: sweep the threshold over every observed novelty (accept when novelty <= t).
    thresholds = np.unique(s)
    ccr = np.array([((novelty_known <= t) & correct_known).mean() for t in thresholds])
    fpr = np.array([(novelty_unknown <= t).mean() for t in thresholds])
    order = np.argsort(fpr, kind="stable")
    fpr_s, ccr_s = np.r_[0.0, fpr[order], 1.0], np.r_[0.0, ccr[order], ccr[order][-1] if len(ccr) else 0.0]
    oscr = float(np.sum(np.diff(fpr_s) * (ccr_s[1:] + ccr_s[:-1]) / 2))
    return {"auroc": auroc, "fpr_at_95tpr": fpr95, "oscr": oscr}


def closed_metrics(truth: np.ndarray, pred: np.ndarray, composers: list[str]) -> dict[str, Any]:
    """Track-level accuracy, balanced accuracy, macro-F1, recall per composer and the confusion
    matrix (rows true, columns predicted, in the order of ``composers``)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score

    labels = list(range(len(composers)))
    return {
        "tracks": int(len(truth)),
        "accuracy": float((truth == pred).mean()),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "macro_f1": float(f1_score(truth, pred, average="macro", labels=labels, zero_division=0)),
        "recall": dict(
            zip(composers, map(float, recall_score(truth, pred, average=None, labels=labels, zero_division=0)))
        ),
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
        "confusion_labels": composers,
    }


def summarise(values: list[float]) -> dict[str, Any]:
    """Mean and (population) standard deviation over seeds, with the values themselves."""
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "values": [float(v) for v in a]}
