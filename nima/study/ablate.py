"""`nima ablate STUDY.gin`: every variant x seed as its own `nima run`, then the report.

The study directory:

```
STUDY_DIR/
  study.gin            the study's operative config: every binding, includes expanded
  experiment.gin       what each run starts from (study.gin without the study block)
  study.json           the plan: variants and their bindings, seeds, metric, baseline
  runs/VARIANT/seedN/  each run's directory, as `nima run --run-dir` writes it
  logs/VARIANT/seedN.log   each run's output
  aside/               unfinished runs of earlier attempts, moved out of the way
  launcher/            the launcher's own files (submitit's)
  results.csv, results.md, curves.png, metric.png
```

Running the command again resumes: finished runs (summary.json, not interrupted) are kept; an
unfinished one is moved to aside/ and runs again. The experiment and each kept variant's bindings
must be what they were; seeds and variants may be added.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console

from nima import atomic
from nima.errors import RunDirError
from nima.hooks import PluginSystem
from nima.runs.records import is_finished, read_run
from nima.study.launch import Job
from nima.study.progress import StudyProgress
from nima.study.report import PLAN, log_path, run_dir, write_report
from nima.study.spec import METRICS, Study

LOCK = ".nima-study"


def default_study_dir(study_file: str | Path) -> Path:
    return Path("runs") / f"study-{Path(study_file).stem}"


def ablate(
    study: Study,
    study_dir: Path,
    system: PluginSystem,
    *,
    jobs: int | None = None,
    dry_run: bool = False,
    show_progress: bool = True,
    disable_plugins: str | None = None,
    console: Console | None = None,
) -> int:
    """Run what is left of the study and write its report; the exit code: 0 when every run
    finished, 1 when some failed (recorded; the others went on), 130 when interrupted."""
    console = console or Console(stderr=True)
    jobs = jobs or study.jobs
    planned = {f"{v.name}/seed{s}": (v, s) for v in study.variants for s in study.seeds}
    dirs = {name: run_dir(study_dir, v.name, s) for name, (v, s) in planned.items()}
    done = [name for name, path in dirs.items() if is_finished(path)]
    if dry_run:
        _print_plan(study, study_dir, planned, done, jobs, console)
        return 0
    launcher = (study.launcher or system.registries["launcher"].get("local"))(jobs=jobs)
    with _locked(study_dir):
        _write_study_files(study, study_dir)
        todo = []
        for name, (variant, seed) in planned.items():
            if name not in done:
                _move_aside(study_dir, variant.name, seed)
                argv = _run_command(study_dir, dirs[name], variant.bindings, seed, disable_plugins)
                todo.append(Job(name, argv, log_path(study_dir, variant.name, seed)))
        console.print(
            f"study {study.file}: {len(planned)} runs ({len(study.variants)} variants x "
            f"{len(study.seeds)} seeds), {len(done)} finished, {len(todo)} to run, {jobs} at a "
            f"time, in {study_dir}",
            highlight=False,
            soft_wrap=True,
        )
        failed = []
        try:
            running = {job.name: dirs[job.name] for job in todo}
            with StudyProgress(running, study.steps, console, live=show_progress) as progress:
                for job, code in launcher.run(todo, study_dir / "launcher"):
                    ok, text = _outcome(study.metric, dirs[job.name], job, code)
                    failed += [] if ok else [job.name]
                    progress.ended(job.name, ok, text)
        except KeyboardInterrupt:
            console.print(
                f"interrupted: the runs still going were stopped. Run the same `nima ablate` "
                f"again to resume: finished runs are kept, the others run again ({study_dir})."
            )
            return 130
        results = write_report(study_dir)
    print((study_dir / "results.md").read_text())
    if failed:
        console.print(
            f"{len(failed)} of {len(todo)} runs failed: {', '.join(failed)}. Their logs are in "
            f"{study_dir / 'logs'}; run the same command again to retry them.",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"results: {study_dir / 'results.md'} (best: {results.best})",
        highlight=False,
        soft_wrap=True,
    )
    return 1 if failed else 0


def _run_command(
    study_dir: Path, run: Path, bindings: Sequence[str], seed: int, disable: str | None
) -> tuple[str, ...]:
    """`nima run` for one variant and seed, paths absolute (a cluster node may run it)."""
    argv = [sys.executable, "-m", "nima.cli", "run", str((study_dir / "experiment.gin").resolve())]
    for binding in [*bindings, f"train.seed = {seed}"]:
        argv += ["--bind", binding]
    argv += ["--run-dir", str(run.resolve()), "--no-progress"]
    return tuple(argv + (["--disable-plugins", disable] if disable else []))


def _outcome(metric: str, path: Path, job: Job, code: int | None) -> tuple[bool, str]:
    """Whether the run finished, and one line about it."""
    record = read_run(path)
    if code == 0 and record.finished:
        return True, f"{metric} {record.summary[metric]:.4f} ({record.summary['wall_s']:.1f}s)"
    lines = job.log.read_text(errors="replace").splitlines() if job.log.is_file() else []
    errors = [line for line in lines if line.startswith(("error:", "[launcher]"))]
    last = (errors or [line for line in lines if line.strip()] or ["(no output)"])[-1]
    return False, f"exit {code}: {last} (log: {job.log})"


@contextlib.contextmanager
def _locked(study_dir: Path) -> Iterator[None]:
    """Hold the study directory: a second `nima ablate` on it is refused while this one runs."""
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunDirError(
                f"Study directory {study_dir} is in use by another `nima ablate` "
                f"({f.read().strip() or 'unknown process'}); wait for it to end, or give "
                f"another --study-dir."
            ) from None
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


def _write_study_files(study: Study, study_dir: Path) -> None:
    """study.gin, experiment.gin and study.json; a resumed study must not have changed."""
    plan = study.plan()
    if (study_dir / PLAN).is_file():
        old = json.loads((study_dir / PLAN).read_text())
        old_experiment = (study_dir / "experiment.gin").read_text()
        before = {v["name"]: v["bindings"] for v in old["variants"]}
        changed = [
            v["name"]
            for v in plan["variants"]
            if before.get(v["name"], v["bindings"]) != v["bindings"]
        ]
        if old_experiment != study.experiment or changed or old["metric"] != study.metric:
            what = f"variant {changed[0]!r}'s bindings" if changed else "the experiment or metric"
            raise RunDirError(
                f"{study_dir} holds a study whose {what} differ from {study.file} now "
                f"(compare {study_dir / 'experiment.gin'} and study.json); its runs would not "
                f"be comparable. Give a new --study-dir, or restore the study file. Seeds and "
                f"variants may be added to a study, but not changed."
            )
    atomic.write_text(study_dir / "study.gin", f"# nima ablate {study.file}\n\n{study.config}")
    atomic.write_text(study_dir / "experiment.gin", study.experiment)
    atomic.write_json(study_dir / PLAN, plan)


def _move_aside(study_dir: Path, variant: str, seed: int) -> None:
    """Move an unfinished run (and its log) to aside/ so that the run can start again."""
    path, log = run_dir(study_dir, variant, seed), log_path(study_dir, variant, seed)
    if not path.exists() and not log.exists():
        return
    if owner := _live_owner(path):
        raise RunDirError(
            f"{path} is unfinished but still being written by process {owner} (a `nima run` "
            f"left running when its study was killed?). Wait for it or stop it, then run the "
            f"study again."
        )
    attempt = 1
    while (aside := study_dir / "aside" / variant / f"seed{seed}.{attempt}").exists():
        attempt += 1
    aside.mkdir(parents=True)
    for item in (path, log):
        if item.exists():
            shutil.move(item, aside / item.name)


def _live_owner(path: Path) -> int | None:
    """The pid of a live process on this host that claimed the run directory, if any."""
    try:
        claim = json.loads((path / ".nima-run").read_text())
    except (OSError, ValueError):
        return None
    if claim.get("host") != socket.gethostname():
        return None
    try:
        os.kill(claim["pid"], 0)
    except (ProcessLookupError, PermissionError, KeyError, TypeError):
        return None
    return claim["pid"]


def _print_plan(
    study: Study, study_dir: Path, planned: dict, done: list[str], jobs: int, console: Console
) -> None:
    """--dry-run: the variants, their bindings, what would run and how; nothing is written."""
    lower = "lower" if METRICS[study.metric] else "higher"
    console.print(
        f"study {study.file} -> {study_dir}\nmetric {study.metric} ({lower} is better), "
        f"baseline {study.baseline}, seeds {', '.join(map(str, study.seeds))}",
        highlight=False,
        soft_wrap=True,
    )
    for variant in study.variants:
        console.print(
            f"  {variant.name}: {'; '.join(variant.bindings)}", highlight=False, soft_wrap=True
        )
    todo = [name for name in planned if name not in done]
    console.print(
        f"{len(planned)} runs: {len(done)} finished, {len(todo)} to run, {jobs} at a time"
        + (f": {', '.join(todo)}" if todo else ""),
        highlight=False,
        soft_wrap=True,
    )
    if todo:
        variant, seed = planned[todo[0]]
        argv = _run_command(
            study_dir, run_dir(study_dir, variant.name, seed), variant.bindings, seed, None
        )
        console.print(f"each as: {shlex.join(argv)}", highlight=False, soft_wrap=True, markup=False)
