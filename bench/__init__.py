"""ccmeter benchmarks: `python -m bench.run` (`make bench`). Results go to bench/out/results.json and
docs/performance.md explains them. Ratios are measured within one run, on the same data, on the same machine."""
