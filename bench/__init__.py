"""voxline benchmarks: ``python -m bench`` runs the suite (bench/suite/) and writes a report."""
