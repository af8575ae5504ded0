"""musicidx.query: an index and new files -> answers (composer, confidence, novelty)."""

from .engine import SCORE_COLUMNS, NearestTrack, QueryResult, ScoreRow, Searcher, list_query_files, score_files

__all__ = ["SCORE_COLUMNS", "NearestTrack", "QueryResult", "ScoreRow", "Searcher", "list_query_files", "score_files"]
