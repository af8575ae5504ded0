"""The two third-party libraries that need care when imported: pretty_midi and pyfluidsynth.

pyfluidsynth (also imported by pretty_midi) prints "'fluidsynth' was found at ..." on import when
``$CI`` is set, and stdout may be carrying JSON or CSV: both are imported with stdout silenced.
A missing FluidSynth shared library is a :class:`~.errors.DependencyError` with the install hint,
raised when something first needs it, never at import time.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from .errors import DependencyError

INSTALL_HINT = (
    "install the FluidSynth library: 'sudo apt-get install libfluidsynth3' on Debian/Ubuntu, "
    "'brew install fluid-synth' on macOS, 'conda install -c conda-forge fluidsynth' elsewhere"
)


def _quiet_stdout() -> contextlib.redirect_stdout[io.StringIO]:
    return contextlib.redirect_stdout(io.StringIO())


def import_pretty_midi() -> Any:
    """The ``pretty_midi`` module, imported without a word on stdout."""
    with _quiet_stdout():
        import pretty_midi
    return pretty_midi


def import_fluidsynth() -> Any:
    """The ``fluidsynth`` module (pyfluidsynth), imported without a word on stdout and with
    FluidSynth's own log messages (incl. "panic") switched off; :class:`DependencyError` with
    :data:`INSTALL_HINT` when the shared library is missing."""
    try:
        with _quiet_stdout():
            import fluidsynth
    except ImportError as e:  # pyfluidsynth raises ImportError when the shared library is missing
        raise DependencyError(f"cannot load FluidSynth ({e}); {INSTALL_HINT}") from e
    except OSError as e:
        raise DependencyError(f"cannot load FluidSynth ({e}); {INSTALL_HINT}") from e
    lib = getattr(fluidsynth, "_fl", None)
    set_log = getattr(lib, "fluid_set_log_function", None)
    if set_log is not None:  # keep FluidSynth's own messages off stdout/stderr
        for level in range(5):
            set_log(level, None, None)
    return fluidsynth
