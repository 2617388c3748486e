"""LightningModules, the Trainer factory and callbacks."""
