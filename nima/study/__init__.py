"""Ablation studies: variants x seeds -> `nima run` processes -> statistics, tables and plots.

`spec` reads the study file, `ablate` runs it through a launcher plugin (`launch` is the
contract), `report` turns the run directories into results.csv, results.md and the plots
(`stats`, `plots`), `records` is the one reader of run directories they share.
"""

from nima.study.launch import Job, Launcher
from nima.study.spec import Study, StudySettings, Variant, load_study

__all__ = ["Job", "Launcher", "Study", "StudySettings", "Variant", "load_study"]
