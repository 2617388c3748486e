"""Plain ``nn.Module`` models: nothing here imports Lightning or the training code."""
