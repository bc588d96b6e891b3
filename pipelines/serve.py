"""`clara serve`: run the RAG application locally on Ray Serve (binds 127.0.0.1 by default).

The application and its per-deployment resources/autoscaling come from the same YAML that
`serve deploy` reads (serve/config.yaml); --checkpoint/--store and `key=value` overrides change
the application's `args` (serve.settings.ServeSettings).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from clara_ray.resources import shipped
from pipelines.cli_step import cli_step

SERVE_CONFIG = "serve/config.yaml"
DEFAULT_CONFIG = shipped(SERVE_CONFIG)


def load_serve_config(config: Path, overrides: list[str]):
    """(settings, deployment options, app entry) from a Serve config file + overrides."""
    from clara_ray.config import ConfigError, merge_dicts, parse_overrides, read_yaml_mapping, validate_config
    from serve.settings import ServeSettings

    raw = read_yaml_mapping(config)
    try:
        app = raw["applications"][0]
    except (KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"{config}: not a Serve config with an `applications` list ({exc})") from None
    args = merge_dicts(app.get("args") or {}, parse_overrides(overrides))
    settings = validate_config(ServeSettings, args, f"{config} applications[0].args (with overrides {overrides})")
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments") or []}
    return settings, options, app, raw


@cli_step
def main(
    checkpoint: Annotated[str, typer.Option(help="CLaRa checkpoint directory (query reasoner + generator).")],
    store: Annotated[str, typer.Option(help="Compressed store built from that checkpoint.")],
    config: Annotated[Path, typer.Option(help="Serve config YAML (as for `serve deploy`).")] = Path(SERVE_CONFIG),
    host: Annotated[str, typer.Option(help="Bind address; keep 127.0.0.1 unless auth is on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    override: Annotated[Optional[list[str]], typer.Argument(help="ServeSettings overrides key=value.")] = None,
) -> None:
    """Serve CLaRa RAG over HTTP: /v1/rag, /v1/chat/completions, /v1/models, /healthz.

    The stage-3 model that `clara train --stage end_to_end` exports (CPU
    profile) with the store of `clara precompress ... --out runs/store`:

      clara serve --checkpoint runs/cpu-end-to-end/model --store runs/store

      curl -s localhost:8000/v1/rag -H 'Content-Type: application/json' \\
        -d '{"question": "How many workers can a honey bee colony have?"}'
    """
    import ray
    from ray import serve

    from serve.app import bind_app
    from serve.loading import check_inputs

    overrides = [f"checkpoint={checkpoint}", f"store={store}", *(override or [])]
    settings, options, app, raw = load_serve_config(config, overrides)
    check_inputs(settings)
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    timeout = (raw.get("http_options") or {}).get("request_timeout_s")
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout},
                proxy_location=raw.get("proxy_location", "HeadOnly"))
    serve.run(bind_app(settings, options), name=app.get("name", "clara"), route_prefix=app.get("route_prefix", "/"))
    typer.echo(f"serving {settings.model_name} on http://{host}:{port} (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    typer.run(main)
