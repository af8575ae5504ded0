"""``musicidx serve``: one process that loads an index once and answers many MIDI files over HTTP.

* :mod:`musicidx.serve.service` -- the server without HTTP: the index (picked up again after a
  rebuild swaps it), the bounded pool of worker processes that render, CQT and embed, admission
  (a bounded queue), private upload folders, clip audio.  Imports neither FastAPI nor uvicorn.
* :mod:`musicidx.serve.workers` -- what the worker processes run: an upload's features, a
  training clip as WAV, the warm-up piece.
* :mod:`musicidx.serve.errors` -- the refusals, each with its HTTP status.
* :mod:`musicidx.serve.app` -- the FastAPI face: routes, streaming multipart uploads with limits,
  the bearer token, the page in ``static/``.  Needs the ``serve`` extra (``musicidx[serve]``).

Nothing here is imported by ``import musicidx`` or ``musicidx --help``.
"""
