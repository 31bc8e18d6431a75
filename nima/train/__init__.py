"""Training: settings (the gin `train` configurable), the loop, checkpoints, run directories."""
