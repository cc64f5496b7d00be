"""The end-to-end certification benchmark of the image+text safety filter (docs/BENCHMARK.md):
shared-stream sequential certification (:mod:`.engine`), baselines (:mod:`.baselines`),
thresholds chosen on validation (:mod:`.calibrate`), intervals (:mod:`.stats`), the
per-modality counterexample search (:mod:`.counterexample`) and the report (:mod:`.report`)."""
