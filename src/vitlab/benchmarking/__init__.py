"""Throughput benchmarks of vitlab against the Hugging Face ViT with the same weights, in the same run."""

from vitlab.benchmarking.throughput import BenchCase, default_suite, matmul_peak, run_case

__all__ = ["BenchCase", "default_suite", "matmul_peak", "run_case"]
