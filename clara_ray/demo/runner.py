"""Run the demo's steps on a local Ray cluster, resuming finished ones, then ask questions."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from ray.job_submission import JobStatus

from clara_ray.demo.config import DemoConfig
from clara_ray.demo.steps import Step, pipeline_steps, serve_again, serve_step
from clara_ray.jobs import JobFailed, LocalRayCluster, save_log, submit, submit_and_wait


def say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _marker(cfg: DemoConfig, step: Step) -> Path:
    return cfg.workdir.resolve() / "done" / step.name


def run_steps(cfg: DemoConfig, address: str) -> None:
    logs = cfg.workdir.resolve() / "logs"
    for step in pipeline_steps(cfg):
        marker = _marker(cfg, step)
        if marker.exists():
            say(f"{step.name}: done in an earlier run, skipped (delete {marker} to redo)")
            continue
        say(f"{step.name}: ray job submit -- {step.entrypoint}")
        say(f"{step.name}: log: {logs / f'{step.name}.log'}")
        started = time.monotonic()
        submit_and_wait(address, step.name, step.entrypoint, logs / f"{step.name}.log", timeout=cfg.step_timeout_s,
                        heartbeat=say)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"entrypoint": step.entrypoint, "seconds": round(time.monotonic() - started, 1)}))
        say(f"{step.name}: succeeded in {time.monotonic() - started:.0f}s (log: {logs / f'{step.name}.log'})")


def _post(url: str, body: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _wait_healthy(base: str, client, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get_job_status(job_id).is_terminal():
            raise RuntimeError("the serve job exited before the endpoint came up")
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(3)
    raise TimeoutError(f"{base}/healthz not healthy within {timeout:.0f}s")


def ask_questions(cfg: DemoConfig, address: str) -> list[dict]:
    step = serve_step(cfg)
    log = cfg.workdir.resolve() / "logs" / "serve.log"
    say(f"serve: ray job submit -- {step.entrypoint}")
    client, job_id = submit(address, step.name, step.entrypoint)
    base = f"http://127.0.0.1:{cfg.serve_port}"
    try:
        try:
            _wait_healthy(base, client, job_id, cfg.step_timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            raise JobFailed("serve", str(exc), save_log(client, job_id, log)) from None
        say(f"serve: endpoint up at {base}")
        answers = []
        for question in cfg.questions:
            reply = _post(f"{base}/v1/rag", {"question": question, "max_new_tokens": cfg.max_new_tokens})
            answers.append({"question": question, **reply})
            print(f"\nQ: {question}\nA: {reply['answer']}")
            for doc in reply["documents"]:
                print(f"   [{doc['score']:.3f}] {doc['source']}: {doc['text'][:100]!r}")
        return answers
    finally:
        if not client.get_job_status(job_id).is_terminal():
            client.stop_job(job_id)
        save_log(client, job_id, log)


def run_demo(cfg: DemoConfig) -> list[dict]:
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    say(f"starting a local Ray cluster (work dir {cfg.workdir.resolve()})")
    with LocalRayCluster() as cluster:
        say(f"cluster up; dashboard/job API at {cluster.address}")
        run_steps(cfg, cluster.address)
        answers = ask_questions(cfg, cluster.address)
    (cfg.workdir / "answers.json").write_text(json.dumps(answers, indent=1))
    say(f"done; answers in {cfg.workdir / 'answers.json'}; cluster stopped")
    say(f"serve it again: {serve_again(cfg)}\n  then open the chat page at http://127.0.0.1:8000/")
    return answers
