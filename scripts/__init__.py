"""Tools for people: benchmarks, the llama.cpp build and model makers.

Run from the repository root as ``python -m scripts.NAME`` (scripts import each other, the
package and the test infrastructure by their full names); the test infrastructure imports
the model makers as ``scripts.model_making`` and ``scripts.reranker_making``.
"""
