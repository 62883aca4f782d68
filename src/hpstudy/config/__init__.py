"""The configuration layer: `Config`, the searched factors, the study model and study files."""
