"""The localized network: the model, patch sampling, its fast (factorised) and direct forms,
training and checkpoints, model files, and the learned linear-filter baseline."""
