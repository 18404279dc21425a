"""Training on Tinker: the recipe, checkpoints, sweeps."""
