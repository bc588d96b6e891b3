"""StoreWatcher on synthetic stores (no model, no Ray), and the Grafana dashboard against the metrics."""
from __future__ import annotations

import json
import logging
import re
from functools import partial
from pathlib import Path

from store_helpers import SHAPE, docs_for, identity

from clara_ray.store import CompressedStore, IndexConfig, StoreWriter, layout, normalize
from clara_ray.store.synthetic import synthetic_docs
from serve.store_watch import StoreWatcher

REPO = Path(__file__).resolve().parents[2]
VECTORS = synthetic_docs(30, SHAPE, chunk_seed=3, topics=5)


def _publish(root: Path, start: int, count: int, fingerprint: str = "a" * 64) -> None:
    with StoreWriter(root, identity(fingerprint), IndexConfig(threads=1)) as writer:
        writer.add(VECTORS[start:start + count], docs_for(start, count))
        writer.publish()


def _watcher(root: Path, swapped: list) -> StoreWatcher:
    opener = partial(CompressedStore.open, root, expect_checkpoint="a" * 64)
    return StoreWatcher(root, opener, interval_s=0, on_swap=swapped.append)


def test_a_new_version_is_swapped_in_and_a_running_search_keeps_its_own(tmp_path):
    _publish(tmp_path, 0, 10)
    swapped = []
    watcher = _watcher(tmp_path, swapped)
    running = watcher.store  # what a model call took before the publish
    assert watcher.check().swapped is False
    _publish(tmp_path, 10, 5)
    result = watcher.check()
    assert (result.swapped, result.version, result.documents, result.refused) == (True, 2, 15, None)
    assert [len(s) for s in swapped] == [10, 15] and watcher.store is swapped[-1]
    assert watcher.store.search(normalize(VECTORS[12:13]), k=1).ids[0, 0] == "doc-12"
    assert len(running) == 10 and running.search(normalize(VECTORS[3:4]), k=1).ids[0, 0] == "doc-3"


def test_another_checkpoints_or_a_corrupted_version_is_refused_once_and_the_old_one_stays(tmp_path, caplog):
    root = tmp_path / "store"
    _publish(root, 0, 10)
    watcher = _watcher(root, [])
    serving = watcher.store
    _publish(tmp_path / "other", 0, 10, fingerprint="b" * 64)
    other = layout.current_version_dir(tmp_path / "other")
    (root / layout.VERSIONS / "v000002").symlink_to(other)
    (root / "shards").joinpath(next((tmp_path / "other" / "shards").iterdir()).name).symlink_to(
        next((tmp_path / "other" / "shards").iterdir()))
    layout.swap_current(root, "v000002")
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        for _ in range(2):
            result = watcher.check()
            assert (result.swapped, result.version) == (False, 1) and "fingerprint" in result.refused
            assert watcher.store is serving
    assert len([r for r in caplog.records if "refusing v000002" in r.getMessage()]) == 1  # logged once
    layout.swap_current(root, "v000001")
    _publish(root, 10, 5)  # v000003, corrupted before anyone opens it
    index = layout.current_version_dir(root) / layout.INDEX_FILE
    index.write_bytes(index.read_bytes()[::-1])
    result = watcher.check()
    assert (result.swapped, result.version) == (False, 1) and "corrupted index" in result.refused
    assert watcher.store.search(normalize(VECTORS[:1]), k=1).ids[0, 0] == "doc-0"


def test_the_grafana_dashboard_plots_only_metrics_the_app_exports():
    from serve.metrics import Metrics

    defined = {metric._name for metric in vars(Metrics()).values()}
    dashboard = json.loads((REPO / "docs/grafana/clara-serve.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    plotted = {re.sub(r"_(total|bucket|count|sum)$", "", name) for q in queries for name in re.findall(r"ray_(\w+)", q)}
    assert plotted == defined  # every metric on show, none misspelled
