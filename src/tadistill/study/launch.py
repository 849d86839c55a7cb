"""Running a study's units: one step after another as processes, on this machine or as
cluster jobs through submitit.

- `run_unit` runs the steps of one unit that are not done, recording each in the unit's
  state file; a failed step stops its unit (later steps need its output), not the study.
- `run_local` runs units in order in this process's children. Ctrl-C or SIGTERM is passed
  on to the running step (a distillation checkpoints) and the study stops; if this process
  is killed, the running step gets SIGTERM from the kernel (PR_SET_PDEATHSIG) and still
  checkpoints. A lock on the study directory, held by every step too, keeps a second
  `tadistill study` off the directory until the last step of the first has stopped.
- `submit` sends every unit that is not done and not already running as a submitit job
  (Slurm, or submitit's local executor): the job runs `run_unit`; on a pre-emption or time
  limit submitit calls `UnitJob.checkpoint`, which stops the step (the distillation
  checkpoints) and requeues the job. Running the study again collects: finished units are
  done, units whose job is gone unfinished (failed, cancelled, lost) are submitted again.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from tadistill.errors import TadistillError
from tadistill.study.plan import Unit, plan_from_json
from tadistill.study.state import now, read_state, step_done, write_state

ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


class StudyInterrupted(TadistillError):
    def __init__(self, signal_number: int):
        self.exit_code = 128 + signal_number
        super().__init__(f"stopped by {signal.Signals(signal_number).name}; run the same command again to continue")


# ---------------------------------------------------------------- steps


def run_unit(study_dir: Path, unit: Unit, report: Callable[[], None] = lambda: None, forward_signals: bool = True,
             keep_fds: tuple[int, ...] = ()) -> bool:
    """Run the unit's steps that are not done; True when all are done."""
    state = read_state(study_dir, unit.name)
    for step in unit.steps:
        if step_done(step, state):
            continue
        before = state["steps"].get(step.name, {})
        spent = before.get("seconds", 0.0) if before.get("fingerprint") == step.fingerprint else 0.0
        record = {"state": "running", "fingerprint": step.fingerprint, "started": now(), "seconds": spent}
        state["steps"][step.name] = record
        write_state(study_dir, unit.name, state)
        report()
        log = Path(study_dir) / "logs" / unit.name / f"{step.name.replace('/', '-')}.log"
        started = time.monotonic()
        try:
            code = run_command(step.argv, log, forward_signals=forward_signals, keep_fds=keep_fds)
        except StudyInterrupted:
            record.update(state="pending", seconds=round(spent + time.monotonic() - started, 1))
            write_state(study_dir, unit.name, state)
            raise
        record.update(seconds=round(spent + time.monotonic() - started, 1), finished=now())
        if code == 0 and Path(step.marker).is_file():
            record["state"] = "done"
        else:
            record.update(state="failed", error=_last_error(log, code))
        write_state(study_dir, unit.name, state)
        report()
        if record["state"] == "failed":
            return False
    return True


def run_command(argv: list[str], log: Path, forward_signals: bool = True, keep_fds: tuple[int, ...] = ()) -> int:
    """Run one step, its output to `log`; its exit code. SIGINT/SIGTERM to this process
    reach the step as SIGTERM, and end the study once the step has stopped."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n# {now()}: {' '.join(argv)}\n")
        out.flush()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,
                                   pass_fds=keep_fds, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        with _passed_on(process, forward_signals) as received:
            code = process.wait()
    if received:
        raise StudyInterrupted(received[0])
    return code


@contextmanager
def _passed_on(process: subprocess.Popen, enabled: bool):
    received: list[int] = []
    if not enabled:
        yield received
        return

    def handler(number, frame):
        received.append(number)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the study process dies, so an interrupted distillation checkpoints."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the step then outlives a killed study
        pass


def _last_error(log: Path, code: int) -> str:
    text = log.read_text(errors="replace")
    # a progress bar may share the line (tqdm writes \r, no newline, before the error)
    errors = re.findall(r"tadistill [\w-]+: error: [^\r\n]*", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = errors[-1] if errors else (lines[-1] if lines else "no output")
    return f"exit code {code}: {reason} (log: {log})"


# ---------------------------------------------------------------- on this machine


@contextmanager
def study_lock(study_dir: Path):
    """An exclusive lock on the study directory; yields its file descriptor (steps inherit it)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(study_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another `tadistill study` on {study_dir} (or the last step it started) to stop ...",
                  flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def run_local(study_dir: Path, units: list[Unit], report: Callable[[], None], lock_fd: int) -> bool:
    """Run every unit in order; True when all are done."""
    finished = {}
    for unit in units:
        if any(finished.get(name) is False for name in unit.after):
            continue  # what it needs failed: it stays pending, the failure is reported there
        finished[unit.name] = run_unit(study_dir, unit, report, keep_fds=(lock_fd,))
    return all(finished.values())


# ---------------------------------------------------------------- as jobs


class UnitJob:
    """What a submitit job runs: the unit's steps (after the units it needs, run under a lock
    so that concurrent jobs fit a shared teacher head once)."""

    def __init__(self, study_dir: str):
        self.study_dir = study_dir
        self.running: subprocess.Popen | None = None

    def __call__(self, unit_name: str) -> bool:
        study_dir = Path(self.study_dir)
        units = plan_from_json(json.loads((study_dir / "plan.json").read_text()))
        for name in units[unit_name].after:
            with _file_lock(study_dir / "state" / f"{name}.lock"):
                if not run_unit(study_dir, units[name], forward_signals=False):
                    return False
        return run_unit(study_dir, units[unit_name], forward_signals=False)

    def checkpoint(self, unit_name: str):
        """Pre-empted or out of time: the running step got SIGTERM from the scheduler (a
        distillation checkpoints); requeue the job to continue where it stopped."""
        import submitit

        return submitit.helpers.DelayedSubmission(UnitJob(self.study_dir), unit_name)


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def executor(study_dir: Path, cluster: str, launcher, name: str):
    """A submitit executor for `cluster` ("slurm" or "local") with the study's launcher settings."""
    try:
        import submitit
    except ImportError:
        raise TadistillError("--launcher slurm needs submitit: pip install -c constraints.txt -e \".[cluster]\"") from None
    jobs = submitit.AutoExecutor(folder=str(study_dir / "jobs" / "%j"), cluster=cluster)
    options = {"timeout_min": launcher.time_limit_min, "name": f"tadistill-{name}", "gpus_per_node": launcher.gpus_per_job,
               "tasks_per_node": 1, "nodes": 1}
    if launcher.cpus_per_job:
        options["cpus_per_task"] = launcher.cpus_per_job
    if launcher.mem_gb:
        options["mem_gb"] = launcher.mem_gb
    if cluster == "slurm":
        options.update({f"slurm_{key}": value for key, value in (
            ("partition", launcher.partition), ("account", launcher.account),
            ("array_parallelism", launcher.max_parallel)) if value is not None})
        if launcher.slurm_options:
            options["slurm_additional_parameters"] = dict(launcher.slurm_options)
    jobs.update_parameters(**options)
    return jobs


def job_alive(study_dir: Path, job: dict) -> bool:
    """Whether a unit's job is still queued or running."""
    if job["cluster"] == "local":  # submitit's local jobs are processes of this machine
        try:
            os.kill(int(job["id"]), 0)
        except (ProcessLookupError, ValueError):
            return False
        return not Path(job["result"]).exists()
    import submitit

    state = submitit.SlurmJob(folder=job["folder"], job_id=job["id"]).state
    return state.split()[0] in ACTIVE_SLURM_STATES


def submit(study_dir: Path, units: list[Unit], cluster: str, launcher, name: str, wait: bool,
           report: Callable[[], None]) -> bool:
    """Submit the units that need it; with `wait`, wait for the jobs and return whether all are done."""
    jobs = executor(study_dir, cluster, launcher, name)
    submitted = []
    for unit in units:
        state = read_state(study_dir, unit.name)
        if all(step_done(step, state) for step in unit.steps):
            continue
        if "job" in state and job_alive(study_dir, state["job"]):
            continue
        job = jobs.submit(UnitJob(str(study_dir.resolve())), unit.name)
        state["job"] = {"cluster": cluster, "id": job.job_id, "folder": str(job.paths.folder),
                        "result": str(job.paths.result_pickle), "submitted": now()}
        write_state(study_dir, unit.name, state)
        submitted.append((unit, job))
        print(f"submitted {unit.name} as job {job.job_id}", flush=True)
    report()
    if not wait:
        return False
    for unit, job in submitted:
        while not job.done():
            time.sleep(5)
            report()
    return all(all(step_done(s, read_state(study_dir, u.name)) for s in u.steps) for u in units)

