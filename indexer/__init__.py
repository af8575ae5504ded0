"""musicidx.indexer: a folder of labelled MIDI -> an index directory.

The build, in the order it runs: corpus scan (:mod:`.corpus`), cached parallel feature
extraction (:mod:`.features`, on Ray: :mod:`.distributed`) into a prepared corpus
(:mod:`.prepare`); the fit (:mod:`.fit`) -- the held-out works (:mod:`.holdout`), the encoder
and its cache (:mod:`.training`), held-out scoring (:mod:`.scoring`) and the novelty threshold
(:mod:`.calibration`); the whole build, saved atomically (:mod:`.build`); ``add``
(:mod:`.enrol`).  The vote and the novelty, shared with queries: :mod:`.neighbours`.  The index
itself: its manifest and layout (:mod:`.manifest`, on :mod:`.records`), its contents saved and
read whole (:mod:`.format`), the ANN index (:mod:`.ann`) and the safe destination with its lock
and atomic swap (:mod:`.destination`).
"""

from .build import BuildReport, build_index
from .corpus import CorpusError, Track, scan_corpus, work_of
from .fit import FitReport, fit_index
from .format import IndexContents, read_index, save_index
from .manifest import FORMAT_VERSION, IndexFormatError, Manifest
from .prepare import Corpus, prepare_corpus

__all__ = [
    "FORMAT_VERSION",
    "BuildReport",
    "Corpus",
    "CorpusError",
    "FitReport",
    "IndexContents",
    "IndexFormatError",
    "Manifest",
    "Track",
    "build_index",
    "fit_index",
    "prepare_corpus",
    "read_index",
    "save_index",
    "scan_corpus",
    "work_of",
]
