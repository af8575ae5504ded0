"""Accuracy experiments: recipes and encoders judged by `musicidx eval` and cross-corpus, baselines."""
