"""Built-in NIMA loggers: metrics.jsonl, the live progress display, TensorBoard and CSV.

A logger is an object with any of NIMA's trainer hooks (`nima_train_start`, `nima_train_step`,
`nima_evaluate`, `nima_train_end`) and `close()`, chosen in gin:
`train.loggers = [@logger.jsonl(), @logger.progress(), @logger.tensorboard()]`.
"""

from nima import hookimpl
from nima.train.metrics import MetricsFile
from nima.train.progress import ProgressDisplay
from nima_loggers.files import CSVLogger, TensorBoardLogger


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in loggers."""
    registry.logger("jsonl", MetricsFile, description="metrics.jsonl in the run directory")
    registry.logger("progress", ProgressDisplay, description="live progress display (rich)")
    registry.logger("tensorboard", TensorBoardLogger)
    registry.logger("csv", CSVLogger)
