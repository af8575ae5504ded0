"""Data generators: the cross-corpus evaluation sets, the pretraining hold-out list, synthetic corpora
and embeddings."""
