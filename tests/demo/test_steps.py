"""The demo's plan: each step's command line is valid for its entry point's config, and the
steps chain (stage N+1 starts from stage N's export; precompress and serve read stage 3)."""
from pathlib import Path

from clara_ray.config import load_config
from clara_ray.demo.config import DemoConfig
from clara_ray.demo.steps import model_dir, pipeline_steps, serve_again, serve_step, store_dir
from clara_ray.ingest.config import IngestConfig
from clara_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def demo_config(tmp_path) -> DemoConfig:
    return load_config(DemoConfig, REPO / "configs/demo.yaml", [f"workdir={tmp_path}"])


def option(argv, name):
    return argv[argv.index(name) + 1]


def test_every_step_parses_with_its_own_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = demo_config(tmp_path)
    steps = {s.name: s.argv for s in pipeline_steps(cfg)}
    assert list(steps) == ["ingest", "train-compress_pretrain", "train-instruct", "train-end_to_end", "precompress"]
    ingest = steps["ingest"]
    load_config(IngestConfig, option(ingest, "--config"),
                [f"input={option(ingest, '--input')}", f"out={option(ingest, '--out')}", *ingest[ingest.index("--config") + 2:]])
    previous = None
    for stage in ("compress_pretrain", "instruct", "end_to_end"):
        argv = steps[f"train-{stage}"]
        train = load_config(TrainConfig, option(argv, "--config"), argv[argv.index("--config") + 2:])
        assert train.stage == stage
        assert Path(train.run.storage_path) / train.run.name / "model" == model_dir(cfg, stage)
        if previous:
            assert Path(train.init_from) == model_dir(cfg, previous)
        assert all(Path(p).is_absolute() for p in train.data.paths)
        previous = stage
    final = str(model_dir(cfg, "end_to_end"))
    assert option(steps["precompress"], "--checkpoint") == final
    assert option(serve_step(cfg).argv, "--checkpoint") == final
    # what the demo prints at the end to serve its outputs again (the chat page at /)
    assert serve_again(cfg).split() == ["clara", "serve", "--checkpoint", final, "--store", str(store_dir(cfg))]
