import pytest

from clara_ray.ingest.config import ApiConfig, SynthesisConfig
from clara_ray.ingest.openai_client import ApiCallError, ChatClient
from clara_ray.ingest.synthesis import generate_messages, synthesize_chunk
from ingest_helpers import api_overrides

PASSAGE = ("Honey bees live in colonies of up to sixty thousand workers. The queen lays all the eggs. "
           "Workers collect nectar within a few kilometres of the hive. Drones exist only to mate.")


def _client(server) -> ChatClient:
    api = ApiConfig(**api_overrides(server))
    return ChatClient(api, api.text_model)


def test_unsupported_pair_is_rejected_and_regenerated(scripted_api):
    server = scripted_api()  # generates 3 good pairs + 1 whose answer is not in the passage
    result = synthesize_chunk(_client(server), PASSAGE, SynthesisConfig(verify_rounds=2))
    answers = [p["answer"] for p in result["qa"]]
    assert "UNSUPPORTED-ANSWER" not in answers and len(answers) == 4
    assert all(a in PASSAGE for a in answers)
    assert {p["type"] for p in result["qa"]} == {"factual", "reasoning"}
    assert result["rounds"] == 1 and result["rejected"] == 1
    assert result["summary"].startswith("Summary: Honey bees")
    assert server.requests == {"generate": 1, "verify": 2, "regenerate": 1}
    # The schemas bound the lists: at most max_qa pairs generated, only the missing ones regenerated.
    schemas = [f["json_schema"]["schema"] for f in server.response_formats]
    bounds = [(s["properties"]["qa_pairs"]["minItems"], s["properties"]["qa_pairs"]["maxItems"]) for s in schemas
              if "qa_pairs" in s["properties"]]
    assert bounds == [(SynthesisConfig().min_qa, SynthesisConfig().max_qa), (1, 1)]
    # one verdict per pair under review: 4 generated, then the 1 regenerated
    assert [(s["properties"]["verdicts"]["minItems"], s["properties"]["verdicts"]["maxItems"]) for s in schemas
            if "verdicts" in s["properties"]] == [(4, 4), (1, 1)]


def test_string_bounds_from_the_config_travel_in_the_schema(scripted_api):
    server = scripted_api()
    cfg = SynthesisConfig(verify_rounds=0, summary_max_chars=300, question_max_chars=120, answer_max_chars=80)
    synthesize_chunk(_client(server), PASSAGE, cfg)
    schema = server.response_formats[0]["json_schema"]["schema"]
    pair = schema["$defs"]["QAPair"]["properties"]
    assert (schema["properties"]["summary"]["maxLength"], pair["question"]["maxLength"],
            pair["answer"]["maxLength"]) == (300, 120, 80)


def test_a_missing_pair_type_is_asked_for_in_the_regeneration_round(scripted_api):
    server = scripted_api(bad_pair=False, generate_types=("factual", "factual"))
    result = synthesize_chunk(_client(server), PASSAGE, SynthesisConfig(min_qa=2, max_qa=3, verify_rounds=1))
    assert [p["type"] for p in result["qa"]] == ["factual", "factual", "reasoning"]
    assert server.requests == {"generate": 1, "verify": 2, "regenerate": 1}


def test_without_regeneration_rounds_failures_are_dropped(scripted_api):
    server = scripted_api()
    result = synthesize_chunk(_client(server), PASSAGE, SynthesisConfig(verify_rounds=0))
    assert len(result["qa"]) == 3 and result["rounds"] == 0
    assert "regenerate" not in server.requests


def test_chunk_whose_pairs_never_verify_is_an_error(scripted_api):
    server = scripted_api(reject_all=True)
    with pytest.raises(ApiCallError, match="after 2 regeneration round") as info:
        synthesize_chunk(_client(server), PASSAGE, SynthesisConfig(verify_rounds=2))
    assert info.value.kind == "verification_failed"
    assert server.requests == {"generate": 1, "verify": 3, "regenerate": 2}


def test_prompt_asks_for_extra_languages():
    prompt = generate_messages(PASSAGE, SynthesisConfig(languages=["en", "fr"], cross_lingual=True))[-1]["content"]
    assert 'language "fr"' in prompt and '"fr-en"' in prompt and "3 to 5" in prompt
