"""Model bundles (safetensors + config + tokenizer) and MLflow pyfunc models."""
