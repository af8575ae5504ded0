"""musicidx.query: an index and new files -> answers (composer, confidence, novelty).

:class:`~musicidx.query.engine.Searcher` answers; the vote and the novelty it answers with are
computed by :mod:`musicidx.indexer.neighbours`, one floor down, because the build calibrates the
novelty threshold (:mod:`musicidx.indexer.calibration`) with the very same functions.
"""

from .engine import SCORE_COLUMNS, NearestTrack, QueryResult, ScoreRow, Searcher, list_query_files, score_files

__all__ = ["SCORE_COLUMNS", "NearestTrack", "QueryResult", "ScoreRow", "Searcher", "list_query_files", "score_files"]
