"""Programs around the pipeline: evaluation, benchmarks, the demo scene, the baseline, synthetic scenes, metrics."""
