"""Tools for people: benchmarks, the llama.cpp build and model makers.

Run as ``python scripts/NAME.py`` (a script imports its neighbours by name); this file also
lets the test infrastructure import the model makers as ``scripts.model_making``.
"""
