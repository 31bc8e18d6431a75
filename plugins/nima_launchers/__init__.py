"""Built-in NIMA launchers (how a study's runs are started), registered through the `nima`
entry-point group: `local` processes on this machine, `submitit` for SLURM clusters."""

from nima import hookimpl
from nima_launchers.cluster import SubmititLauncher
from nima_launchers.local import LocalLauncher


@hookimpl
def nima_register(registry) -> None:
    """Register the built-in launchers (gin: `study.launcher = @launcher.local`)."""
    registry.launcher("local", LocalLauncher)
    registry.launcher("submitit", SubmititLauncher)
