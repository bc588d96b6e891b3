import json

import pytest
from pydantic import ValidationError

from clara_ray import CLaRaConfig
from clara_ray.config import InputError
from clara_ray.model.configuration import CONFIG_FILE, CheckpointError


@pytest.mark.parametrize("rate,expected", [(1, 256), (4, 64), (32, 8), (128, 2), (256, 1)])
def test_memory_token_count_follows_compression_rate(rate, expected):
    config = CLaRaConfig(backbone="tiny-random", doc_max_length=256, compression_rate=rate)
    assert config.num_memory_tokens == expected
    assert len(set(config.memory_tokens())) == expected  # distinct tokens


@pytest.mark.parametrize("fields", [{"compression_rate": 0}, {"compression_rate": 257},
                                    {"doc_max_length": 16, "compression_rate": 32}])
def test_invalid_rates_are_rejected(fields):
    with pytest.raises(ValidationError):
        CLaRaConfig(**fields)


def test_from_pretrained_reads_the_saved_config_with_overrides_laid_over(tmp_path):
    saved = CLaRaConfig(backbone="tiny-random", doc_max_length=64, compression_rate=16, trained={"compressor": "x"})
    (tmp_path / CONFIG_FILE).write_text(saved.model_dump_json())
    assert CLaRaConfig.from_pretrained(tmp_path) == saved
    assert CLaRaConfig.from_pretrained(tmp_path, dtype="bfloat16") == saved.model_copy(update={"dtype": "bfloat16"})


DAMAGED_CONFIGS = {
    "not JSON": (b'{"backbone": ', "line 1: invalid JSON"),
    "not UTF-8": (b'{"backbone": "caf\xe9"}', "line 1: not UTF-8 text (byte 0xe9 at column 18)"),
    "not an object": (b"[1, 2]", "top level must be a JSON object, got list"),
    "bad field": (json.dumps({"backbone": "tiny-random", "compression_rate": "x"}).encode(), "compression_rate: "),
    "unknown field": (json.dumps({"backbone": "tiny-random", "rate": 4}).encode(), "rate: Extra inputs"),
    "nested too deeply": (b"[" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", DAMAGED_CONFIGS)
def test_a_damaged_checkpoint_config_is_an_input_error_naming_the_file(case, tmp_path):
    content, why = DAMAGED_CONFIGS[case]
    (tmp_path / CONFIG_FILE).write_bytes(content)
    with pytest.raises(CheckpointError) as raised:
        CLaRaConfig.from_pretrained(tmp_path)
    assert isinstance(raised.value, InputError)  # what every entry point reports on one line
    assert str(raised.value).startswith(f"{tmp_path / CONFIG_FILE}: ") and why in str(raised.value)


def test_a_directory_without_a_config_is_not_a_checkpoint_and_a_bad_override_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="is not a CLaRa checkpoint"):
        CLaRaConfig.from_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(CLaRaConfig(backbone="tiny-random").model_dump_json())
    with pytest.raises(CheckpointError, match=r"with overrides \['compression_rate'\]\): compression_rate"):
        CLaRaConfig.from_pretrained(tmp_path, compression_rate=0)
