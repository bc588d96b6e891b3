"""JSON-schema-constrained decoding for Hugging Face `generate` (lm-format-enforcer's core).

The embedded local LLM is a 135M model: asked for JSON it writes almost-JSON, and every reply
fails validation. `response_format` is honoured the way hosted APIs do, by allowing only tokens
that keep the output a valid prefix of the schema. lm-format-enforcer's own transformers
integration imports modules that transformers 5 removed, so the tokenizer table is built here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer, TokenEnforcerTokenizerData


def _regular_tokens(tokenizer) -> list[tuple[int, str, bool]]:
    """(id, text, starts a word) for every non-special token. Decoding after a fixed token
    reveals a leading space that decoding the token alone would strip."""
    anchor = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    tokens = []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        after_anchor = tokenizer.decode([anchor, token_id])[1:]
        alone = tokenizer.decode([token_id])
        tokens.append((token_id, after_anchor, len(after_anchor) > len(alone)))
    return tokens


@lru_cache(maxsize=4)
def tokenizer_data(tokenizer) -> TokenEnforcerTokenizerData:
    """Built once per tokenizer (a few seconds: it decodes the whole vocabulary)."""
    decode = lambda ids: tokenizer.decode(ids).rstrip("\ufffd")  # noqa: E731 - drop half-decoded bytes
    return TokenEnforcerTokenizerData(_regular_tokens(tokenizer), decode, tokenizer.eos_token_id,
                                      use_bitmask=False, vocab_size=len(tokenizer))


def schema_of(response_format: dict[str, Any] | None) -> dict[str, Any] | None | bool:
    """The JSON schema an OpenAI `response_format` asks for: a dict, None for any JSON object
    (json_object), False when the output is free text."""
    kind = (response_format or {}).get("type")
    if kind == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema") or None
    if kind == "json_object":
        return None
    return False


def prefix_allowed_tokens_fn(tokenizer, schema: dict[str, Any] | None, prompt_length: int):
    """For `generate(prefix_allowed_tokens_fn=...)`: tokens that keep the reply valid JSON."""
    # Indentation is free for a hosted model but costs a small CPU model a decode step per token:
    # at most one whitespace character between JSON tokens keeps the reply compact.
    parser = JsonSchemaParser(schema, config=CharacterLevelParserConfig(max_consecutive_whitespaces=1))
    enforcer = TokenEnforcer(tokenizer_data(tokenizer), parser)

    def allowed(batch_id: int, sequence) -> list[int]:
        return enforcer.get_allowed_tokens(sequence[prompt_length:].tolist()).allowed_tokens

    return allowed
