"""Sources, cleaning, tokenizers, token files and LightningDataModules."""
