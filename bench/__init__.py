"""The benchmarks (see the Makefile's `bench` target); a package so that `python -m bench.verify` runs."""
