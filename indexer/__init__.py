"""musicidx.indexer: a folder of labelled MIDI -> an index directory.

Corpus scan (:mod:`.corpus`), cached parallel feature extraction (:mod:`.features`), training
and calibration (:mod:`.build`), ``add`` (:mod:`.enrol`), the k-NN statistics shared with queries
(:mod:`.neighbours`), and the index itself: its manifest and layout (:mod:`.manifest`, on
:mod:`.records`), its contents saved and read whole (:mod:`.format`), the ANN index
(:mod:`.ann`) and the safe destination with its lock and atomic swap (:mod:`.destination`).
"""

from .build import BuildReport, Corpus, FitReport, build_index, fit_index, prepare_corpus
from .corpus import CorpusError, Track, scan_corpus, work_of
from .format import IndexContents, read_index, save_index
from .manifest import FORMAT_VERSION, IndexFormatError, Manifest

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
