"""MLflow runs (naming, tags, lineage) and the model registry (register, promote, rollback)."""
