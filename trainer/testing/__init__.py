"""Helpers of the tests, benchmarks and image check: generated IMDB data, local clusters, manifests.

`manifests` needs the `test` extra (pip install -e '.[test]').
"""
