"""Table printers: the results files as the Markdown tables of BENCHMARKS.md."""
