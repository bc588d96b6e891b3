"""Submitting pipeline steps as Ray jobs, to a running cluster or a local one started here."""
from clara_ray.jobs.local_cluster import LocalRayCluster
from clara_ray.jobs.spec import JobSpecError, cli_line, load_job_spec, with_working_dir
from clara_ray.jobs.submit import JobFailed, save_log, submit, submit_and_wait

__all__ = ["JobFailed", "JobSpecError", "LocalRayCluster", "cli_line", "load_job_spec", "save_log", "submit",
           "submit_and_wait", "with_working_dir"]
