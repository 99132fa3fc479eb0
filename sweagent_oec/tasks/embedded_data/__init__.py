"""Data only: the embedded task set, pre-validated (instances.jsonl, manifest.json); see tasks/embedded.py."""
