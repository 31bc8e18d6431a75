"""Datasets, data files (download + checksum), splits and token arrays."""
