"""The shipped benchmark: `make bench` (see README, "Benchmark"). Nothing here is imported by the product."""
