"""Submit an entry point as a Ray job, stream its log to a file, and wait for the outcome."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ray.job_submission import JobStatus, JobSubmissionClient
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential


class JobFailed(RuntimeError):
    def __init__(self, name: str, status: str, log_path: Path):
        super().__init__(f"step '{name}' ended {status}; its log: {log_path}")
        self.name, self.status, self.log_path = name, status, log_path


def _agent_not_ready(exc: BaseException) -> bool:
    # A freshly started head serves the dashboard a little before its job agent registers.
    return isinstance(exc, RuntimeError) and "No available agent" in str(exc)


@retry(retry=retry_if_exception(_agent_not_ready), stop=stop_after_delay(120),
       wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
def _submit_job(client: JobSubmissionClient, **kwargs) -> str:
    return client.submit_job(**kwargs)


EXCLUDES = [".venv", ".git", "runs", "outputs", "*.log"]


def submit(address: str, name: str, entrypoint: str, working_dir: str | Path | None = None,
           env_vars: dict[str, str] | None = None, **job_options) -> tuple[JobSubmissionClient, str]:
    """Start `entrypoint` as a job; without working_dir it runs where `ray start` ran.
    job_options: the other `submit_job` arguments of a job spec (runtime_env, entrypoint_num_cpus, ...)."""
    client = JobSubmissionClient(address)
    runtime_env: dict = dict(job_options.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **(env_vars or {})}
    if working_dir is not None:
        runtime_env["working_dir"] = str(working_dir)
        runtime_env.setdefault("excludes", EXCLUDES)
    job_id = _submit_job(client, entrypoint=entrypoint, runtime_env=runtime_env,
                         submission_id=f"{name}-{int(time.time() * 1000)}", **job_options)
    return client, job_id


def save_log(client: JobSubmissionClient, job_id: str, log_path: str | Path) -> Path:
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(client.get_job_logs(job_id))
    return log_path


def submit_and_wait(address: str, name: str, entrypoint: str, log_path: str | Path,
                    working_dir: str | Path | None = None, env_vars: dict[str, str] | None = None,
                    timeout: float = 3600, poll: float = 2.0, heartbeat: Callable[[str], None] | None = None,
                    heartbeat_every: float = 30.0, **job_options) -> str:
    """Run `entrypoint` as a job on the cluster at `address`; raise JobFailed unless it succeeds.
    The log file is rewritten while the job runs (`tail -f` works); `heartbeat`, if given, gets the
    job's latest log line every `heartbeat_every` seconds."""
    client, job_id = submit(address, name, entrypoint, working_dir, env_vars, **job_options)
    started = time.monotonic()
    deadline, next_beat = started + timeout, started + heartbeat_every
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(poll)
        status = client.get_job_status(job_id)
        if heartbeat is not None and time.monotonic() >= next_beat:
            next_beat += heartbeat_every
            lines = [line for line in save_log(client, job_id, log_path).read_text().splitlines() if line.strip()]
            heartbeat(f"{name}: running {time.monotonic() - started:.0f}s | {lines[-1][:160] if lines else '(no output yet)'}")
    log_path = save_log(client, job_id, log_path)
    if not status.is_terminal():
        client.stop_job(job_id)
        raise JobFailed(name, f"TIMED OUT after {timeout:.0f}s", log_path)
    if status != JobStatus.SUCCEEDED:
        raise JobFailed(name, str(status.value), log_path)
    return job_id
