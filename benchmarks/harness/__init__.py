"""The benchmark harness behind ``benchmarks/run.py``.

Modules, in the order a run uses them: :mod:`datasets` (deterministic media, reused between
runs), :mod:`emu` (the emulator as a separate process), :mod:`proctree` (wall, CPU and peak
memory of a whole process tree), :mod:`scenarios` (what each tool runs, and the checks that it
did the work), :mod:`report` (medians, ratios, targets, the table and ``latest.json``) and
:mod:`profiling` (py-spy runs and their summaries). :mod:`ceiling` and :mod:`clip` are scripts
run in child processes: the loopback ceiling client, and the video clip made with the reference
venv's OpenCV.
"""
