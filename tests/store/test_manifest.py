import pytest

from clara_ray.store import StoreError, checkpoint_fingerprint


def test_fingerprint_follows_config_and_adapter_bytes(tmp_path):
    (tmp_path / "adapters").mkdir()
    (tmp_path / "clara_config.json").write_text('{"compression_rate": 32}')
    (tmp_path / "adapters" / "compressor.safetensors").write_bytes(b"\x00" * 64)
    first = checkpoint_fingerprint(tmp_path)
    assert checkpoint_fingerprint(tmp_path) == first
    (tmp_path / "adapters" / "compressor.safetensors").write_bytes(b"\x00" * 63 + b"\x01")
    second = checkpoint_fingerprint(tmp_path)
    assert second != first
    (tmp_path / "clara_config.json").write_text('{"compression_rate": 16}')
    assert checkpoint_fingerprint(tmp_path) not in (first, second)


def test_fingerprint_of_a_missing_or_empty_checkpoint_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="not a directory"):
        checkpoint_fingerprint(tmp_path / "nope")
    with pytest.raises(StoreError, match="is empty"):
        checkpoint_fingerprint(tmp_path)
