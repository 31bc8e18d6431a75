"""Training: settings (the gin `train` configurable), the loop, and writing a run (`nima.runs`)."""
