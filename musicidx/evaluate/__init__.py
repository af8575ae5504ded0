"""``musicidx eval``: the evaluation protocol, an app on the top floor (it builds indexes with the
indexer and asks them with the query stage, fold after fold).

* :mod:`~musicidx.evaluate.protocol` -- :func:`evaluate`: grouped cross-validation (closed set),
  leave one composer out (open set), every held-out track re-orchestrated, over training seeds;
* :mod:`~musicidx.evaluate.cross` -- :func:`evaluate_index`: an existing index asked about another
  labelled folder, composers it lacks counting as new;
* :mod:`~musicidx.evaluate.splits` -- the folds and the leave-one-composer-out splits, public for
  anyone who must split a folder as ``musicidx eval`` does;
* :mod:`~musicidx.evaluate.metrics` -- the arithmetic: accuracy and kin, AUROC, FPR at 95 % TPR,
  OSCR, mean and spread over seeds;
* :mod:`~musicidx.evaluate.report` -- :class:`EvalReport`, assembled from the seeds finished and
  written as ``report.json`` (also part-way, after every fit);
* :mod:`~musicidx.evaluate.plots` -- the PNGs (matplotlib, the ``plots`` extra).

Import from the modules; this package imports nothing, so ``musicidx.evaluate.splits`` stays light.
"""
