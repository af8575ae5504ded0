"""``musicidx demo``, an app on the top floor: real music from the music21 corpus exported, indexed
and asked about, on a fresh machine without the challenge data.

* :mod:`~musicidx.demo.recipe` -- the demo recipe (which pieces, which are held out, the new
  composer, the features and training), validated;
* :mod:`~musicidx.demo.export` -- the pieces exported to MIDI, reusing what ``exports.json`` records;
* :mod:`~musicidx.demo.run` -- :func:`~musicidx.demo.run.run_demo`: export, build, score the
  held-out pieces, summarise.
"""
