"""Scripts that print measured numbers; BENCHMARKS.md records them with their commands.

Run each from the repository root as a module, ``python -m benchmarks.<group>.<script> --help``
(``perf``, ``accuracy``, ``data``, ``tables``); ``benchmarks/README.md`` maps every figure of
BENCHMARKS.md to its command and results file.
"""
