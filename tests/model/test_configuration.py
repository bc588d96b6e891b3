import pytest
from pydantic import ValidationError

from clara_ray import CLaRaConfig


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
