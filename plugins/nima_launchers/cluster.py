"""`launcher.submitit`: a study's runs as jobs of a SLURM cluster, through submitit.

All runs go in one submission (a SLURM job array, at most `jobs` running at once). Each job
calls `nima.study.launch.Job` on a compute node, which runs `nima run` exactly as the local
launcher does; the run directories and logs must be on a file system the nodes share.
`cluster="local"` runs the same code path as local processes through submitit's own local
executor (it starts every job at once: use `launcher.local` to run studies on one machine).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from nima.errors import ConfigError
from nima.study.launch import Job
from nima.validation import Range, checked


@checked
class SubmititLauncher:
    """Runs a study's runs as SLURM jobs through submitit (cluster='local' for a local test)."""

    def __init__(
        self,
        jobs: Annotated[int, Range(ge=1)] = 1,
        cluster: Literal["slurm", "local", "debug"] | None = None,  # None: SLURM if present
        timeout_min: Annotated[int, Range(ge=1)] = 60,
        partition: str | None = None,
        gpus_per_node: Annotated[int, Range(ge=0)] = 0,
        cpus_per_task: Annotated[int, Range(ge=1)] | None = None,
        mem_gb: Annotated[float, Range(gt=0)] | None = None,
        parameters: dict[str, Any]
        | None = None,  # any other submitit parameter, e.g. slurm_account
        poll_s: Annotated[float, Range(gt=0)] = 2.0,
    ) -> None:
        self.jobs, self.cluster, self.poll_s = jobs, cluster, poll_s
        given = {
            "timeout_min": timeout_min,
            "slurm_partition": partition,
            "gpus_per_node": gpus_per_node,
            "cpus_per_task": cpus_per_task,
            "mem_gb": mem_gb,
        }
        self.parameters = {k: v for k, v in given.items() if v is not None} | dict(parameters or {})

    def run(self, jobs: Sequence[Job], folder: Path) -> Iterator[tuple[Job, int | None]]:
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        try:
            executor.update_parameters(slurm_array_parallelism=self.jobs, **self.parameters)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"launcher.submitit: submitit refused the parameters {self.parameters}: {exc}. "
                f"Set them with submitit.<name> in the study file; submitit.parameters takes "
                f"any other parameter submitit's AutoExecutor knows (e.g. slurm_account)."
            ) from None
        with executor.batch():
            handles = [executor.submit(job) for job in jobs]
        pending = dict(zip(handles, jobs, strict=True))
        try:
            while pending:
                for handle in [h for h in pending if h.done()]:
                    job = pending.pop(handle)
                    yield job, _exit_code(handle, job)
                if pending:
                    time.sleep(self.poll_s)
        except BaseException:
            for handle in pending:
                handle.cancel(check=False)
            raise


def _exit_code(handle: Any, job: Job) -> int | None:
    """The run's exit code, or None (noted in its log) when submitit lost the job."""
    try:
        return handle.result()
    except Exception as exc:  # submitit's UncompletedJobError/FailedJobError: timeout, node lost
        job.note(f"submitit job {handle.job_id} did not complete: {type(exc).__name__}: {exc}")
        return None
