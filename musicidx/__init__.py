"""musicidx: who composed this piece, and is it a composer the index knows?

The package is three stages under one namespace -- :mod:`musicidx.encoder` (MIDI to
embeddings), :mod:`musicidx.indexer` (a labelled corpus to an index directory) and
:mod:`musicidx.query` (an index and new files to answers) -- plus the command line in
:mod:`musicidx.cli`.
"""

__version__ = "0.1.0"
