from clara_ray.ingest.chunking import chunk_text, split_sentences
from clara_ray.ingest.config import ChunkConfig

SENTENCES = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(60)]


def test_chunks_respect_target_and_sentence_boundaries():
    text = " ".join(SENTENCES)
    chunks = chunk_text(text, ChunkConfig(target_chars=300, max_chars=400, min_chars=50))
    assert len(chunks) > 5
    assert all(len(c) <= 300 for c in chunks)
    # Every chunk is whole sentences: re-joining gives the text back, no sentence is cut.
    assert " ".join(chunks) == text
    assert all(c.endswith(".") for c in chunks)


def test_caption_brackets_and_quotes_stay_with_their_sentence():
    text = 'Rivers flow. [Image: A red box on white.] The Nile floods. He said "stop!" Then left.'
    assert split_sentences(text) == ["Rivers flow.", "[Image: A red box on white.]", "The Nile floods.",
                                     'He said "stop!"', "Then left."]


def test_blank_lines_separate_headings_and_overlong_sentences_are_cut():
    cfg = ChunkConfig(target_chars=100, max_chars=120, min_chars=10)
    long_sentence = " ".join(["word"] * 80)  # 399 chars without a sentence end
    chunks = chunk_text(f"# Title\n\n{long_sentence}", cfg)
    assert chunks[0].startswith("# Title")
    assert all(len(c) <= 120 for c in chunks)
    assert sum(c.count("word") for c in chunks) == 80


def test_short_tail_joins_previous_chunk():
    cfg = ChunkConfig(target_chars=100, max_chars=150, min_chars=30)
    text = "A" * 90 + ". " + "B" * 60 + ". Tail."
    chunks = chunk_text(text, cfg)
    assert chunks[-1].endswith("Tail.") and len(chunks) == 2


def test_empty_text_gives_no_chunks():
    assert chunk_text("  \n\n ", ChunkConfig()) == []
