"""The parts of ``benchmarks/gpu_check.py``: time-boxed sections and their report (`harness`), the
Markdown page (`render`), what sections share (`common`), the measuring sections (`latency`) and the
search and export sections (`workflow`)."""
