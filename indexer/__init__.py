"""musicidx.indexer: a folder of labelled MIDI -> an index directory.

Corpus scan (:mod:`.corpus`), cached parallel feature extraction (:mod:`.features`), training
and calibration (:mod:`.build`), the on-disk format (:mod:`.store`) and the k-NN statistics
shared with queries (:mod:`.neighbours`).
"""

from .build import BuildReport, Corpus, FitReport, build_index, fit_index, prepare_corpus
from .corpus import CorpusError, Track, scan_corpus, work_of
from .store import FORMAT_VERSION, IndexContents, IndexFormatError, load_index, save_index

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
    "Corpus",
    "CorpusError",
    "FitReport",
    "IndexContents",
    "IndexFormatError",
    "Track",
    "build_index",
    "fit_index",
    "load_index",
    "prepare_corpus",
    "save_index",
    "scan_corpus",
    "work_of",
]
