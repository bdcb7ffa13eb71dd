"""Filter calibration tooling: noise synthesis, the sample assets, and filter measurements on them.

Used by ``benchmarks/filter_calibration.py``, ``benchmarks/filter_throughput.py`` and the tests, never at
run time (nothing under ``dermgen/`` imports it). Importable as ``filterlab`` with ``benchmarks/`` on
``sys.path`` (pytest's ``pythonpath`` has it; scripts in ``benchmarks/`` get it as their own folder).
"""
