"""`launcher.local`: a study's runs as processes on this machine, `jobs` at a time."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

from nima.study.launch import Job
from nima.validation import Range, checked


@checked
class LocalLauncher:
    """Runs a study's runs as processes on this machine, `jobs` at a time."""

    def __init__(self, jobs: Annotated[int, Range(ge=1)] = 1) -> None:
        self.jobs = jobs

    def run(self, jobs: Sequence[Job], folder: Path) -> Iterator[tuple[Job, int | None]]:
        """One thread per slot waits on its process; Ctrl-C (or the caller stopping) sends the
        running processes SIGINT, so each `nima run` saves and exits, and waits for them."""
        lock, running, stopping = threading.Lock(), set(), threading.Event()

        def run_one(job: Job) -> int | None:
            with lock:
                if stopping.is_set():
                    return None
                process = job.start()
                running.add(process)
            return process.wait()

        pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="nima-launcher")
        try:
            futures = {pool.submit(run_one, job): job for job in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            with lock:
                stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            _interrupt(running)
            raise
        finally:
            pool.shutdown()


def _interrupt(processes: set[subprocess.Popen]) -> None:
    """SIGINT each live process (a terminal's Ctrl-C already did) and wait for it to exit."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        process.wait()
