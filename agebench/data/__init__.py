"""Data layer: manifests, the synthetic generator, raw-data importers and the shared DataModule.

Knows nothing of models: it yields batches of {"image", "age", "index", "path"}.
"""
