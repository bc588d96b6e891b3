"""Ingest test helpers: a scripted OpenAI-compatible server on 127.0.0.1 and real documents.

The server is real HTTP (uvicorn in a thread) speaking the chat-completions protocol. Its
answers are derived from the request (captions from the actual pixels, QA pairs from the
passage), so they are deterministic; faults (429, 500, timeouts, broken JSON) are injected at a
seeded rate, and passages containing POISON-JSON / POISON-500 always fail that way.
"""
from __future__ import annotations

import asyncio
import base64
import io
import random
import re
import shutil
import struct
import threading
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

LIBTASN1_PDF = Path("/usr/share/doc/libtasn1-doc/libtasn1.pdf")
PDF_REASON = ("Debian PDF missing: install it with `apt-get install -y libtasn1-doc` "
              "(ships /usr/share/doc/libtasn1-doc/libtasn1.pdf)")


def _sentences(passage: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", passage) if len(s.strip()) > 3]


def _span(sentence: str) -> str:
    """A short answer that occurs verbatim in the passage."""
    words = sentence.split()
    return " ".join(words[:6]) if words else sentence


def _pairs(passage: str, count: int, offset: int, label: str, types: list[str]) -> list[dict]:
    sentences = _sentences(passage) or [passage]
    out = []
    for i in range(count):
        sentence = sentences[(i + offset) % len(sentences)]
        out.append({"question": f"{label} {i + offset}: what does the passage say starting with "
                                f"'{' '.join(sentence.split()[:3])}'?",
                    "answer": _span(sentence), "type": types[i % len(types)], "language": "en"})
    return out


class ScriptedOpenAI:
    def __init__(self, failure_rate: float = 0.0, seed: int = 0, delay_s: float = 0.0, hang_s: float = 2.0,
                 bad_pair: bool = True, reject_all: bool = False, faults_first: tuple[str, ...] = (),
                 generate_types: tuple[str, ...] = ("factual", "reasoning", "factual")):
        self.failure_rate, self.delay_s, self.hang_s, self.bad_pair = failure_rate, delay_s, hang_s, bad_pair
        self.reject_all = reject_all           # the verifier rejects every pair
        self.generate_types = list(generate_types)  # types of the generated pairs, in order
        self.faults_first = list(faults_first)  # these faults first, in order, then the random ones
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: Counter = Counter()   # task -> requests received
        self.faults: Counter = Counter()     # fault -> injected
        self.answered: Counter = Counter()   # task -> good answers sent
        self.response_formats: list = []
        self.conversations: list[list[dict]] = []
        self.generate_passages: list[str] = []  # passages of the "generate" calls, in order
        self.server = None
        self.base_url = ""

    # --- answers -------------------------------------------------------------------------
    def caption(self, data_url: str) -> str:
        from PIL import Image, ImageStat

        image = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
        r, g, b = (int(v) for v in ImageStat.Stat(image).mean)
        colour = max((("red", r), ("green", g), ("blue", b)), key=lambda t: t[1])[0]
        return f"A {image.width}x{image.height} picture, mostly {colour}."

    def answer(self, task: str, prompt: str) -> dict:
        passage = prompt.split("PASSAGE:\n", 1)[-1].split("\nPAIRS:\n")[0]
        if task == "generate":
            pairs = _pairs(passage, len(self.generate_types), 0, "Q", self.generate_types)
            if self.bad_pair:  # one unsupported pair, so verification has something to reject
                pairs.append({"question": "Which colour is the moon in this passage?",
                              "answer": "UNSUPPORTED-ANSWER", "type": "factual", "language": "en"})
            summary = " ".join(_sentences(passage)[:2]) or passage
            return {"summary": f"Summary: {summary}", "qa_pairs": pairs}
        if task == "verify":
            listing = prompt.split("\nPAIRS:\n", 1)[1]
            answers = re.findall(r"^\s+A: (.*)$", listing, flags=re.M)
            return {"verdicts": [{"index": i, "supported": a.strip() in passage and not self.reject_all}
                                 for i, a in enumerate(answers)]}
        if task == "regenerate":
            count = int(re.search(r"Write (\d+) new", prompt).group(1))
            types = re.search(r"of types (.*?) \(in that order\)", prompt).group(1).split(", ")
            return {"qa_pairs": _pairs(passage, count, 1, "R", types)}
        if task == "echo":
            return {"echo": passage}
        raise ValueError(task)

    # --- protocol ------------------------------------------------------------------------
    def _pick_fault(self, task: str, prompt: str) -> str | None:
        if "POISON-500" in prompt:
            return "500"
        if "POISON-JSON" in prompt and task == "generate":
            return "broken_json"
        with self.lock:
            if self.faults_first:
                return self.faults_first.pop(0)
            if self.rng.random() >= self.failure_rate:
                return None
            kinds = ["429", "500", "timeout"] + (["broken_json"] if task != "caption" else [])
            return self.rng.choice(kinds)

    def app(self):
        import json

        app = FastAPI()

        def reply(content: str) -> dict:
            return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                    "model": "scripted", "choices": [{"index": 0, "finish_reason": "stop",
                                                       "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            # the task's own prompt: a re-ask after a bad reply appends the reply and a complaint
            content = next(m["content"] for m in body["messages"] if m["role"] == "user")
            if isinstance(content, list):
                task, prompt = "caption", next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
            else:
                task = re.search(r"TASK: (\w+)", content).group(1)
                prompt = content
            with self.lock:
                self.requests[task] += 1
                if task == "generate":
                    self.generate_passages.append(prompt.split("PASSAGE:\n", 1)[-1])
                self.response_formats.append(body.get("response_format"))
                self.conversations.append(body["messages"])
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            fault = self._pick_fault(task, prompt)
            if fault:
                with self.lock:
                    self.faults[fault] += 1
            if fault == "429":
                return JSONResponse({"error": {"message": "rate limited", "type": "rate_limit"}}, status_code=429)
            if fault == "500":
                return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
            if fault == "timeout":
                await asyncio.sleep(self.hang_s)
            if task == "caption":
                text = self.caption(prompt)
            else:
                text = json.dumps(self.answer(task, prompt))
            if fault == "broken_json":
                text = text[: len(text) // 2]
            with self.lock:
                self.answered[task] += 1
            return reply(text if task == "caption" else f"```json\n{text}\n```")

        return app

    def start(self) -> "ScriptedOpenAI":
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="error"))
        threading.Thread(target=self.server.run, daemon=True).start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("scripted server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def api_overrides(server: ScriptedOpenAI, **extra) -> dict:
    """ApiConfig fields pointing at `server`, with test-sized timeouts and backoff."""
    return {**dict(base_url=server.base_url, api_key="test", text_model="scripted-text",
                   vision_model="scripted-vision", env_file=None, timeout_s=1.0, max_attempts=8,
                   initial_backoff_s=0.01, max_backoff_s=0.1, requests_per_second=200.0), **extra}


# --- documents -------------------------------------------------------------------------------
TOPIC = ("Honey bees live in colonies of up to sixty thousand workers. The queen lays all the eggs. "
         "Workers collect nectar and pollen from flowers within a few kilometres of the hive. "
         "Nectar is turned into honey by evaporation and enzymes. Drones exist only to mate with queens. "
         "In winter the colony clusters together and shivers to keep the queen warm. ")


def _picture(path: Path, colour: str, size=(320, 200)) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle([10, 10, size[0] - 10, size[1] - 10], fill=colour)
    image.save(path, format="PNG")
    return path


def pixel_bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid black 1-bit PNG of width x height (20000 x 20000: 400 Mpx in ~50 KB), written
    chunk by chunk: Pillow would need the whole bitmap in memory to encode it."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = (b"\x00" + bytes(-(-width // 8))) * height  # filter byte + packed pixels per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))


def bomb_jpeg(path: Path, side: int = 13_400) -> Path:
    """A grey baseline JPEG of side x side; 13400 px is just over twice Pillow's pixel limit, the size
    at which Image.open raises DecompressionBombError (~3 s and ~0.6 MB)."""
    from PIL import Image

    Image.new("L", (side, side), 128).save(path, quality=50)
    return path


def swap_media(container: Path, data: bytes) -> None:
    """Replace the one picture inside a DOCX/PPTX (python-pptx itself cannot open a pixel bomb)."""
    with zipfile.ZipFile(container) as zin:
        members = [(info, zin.read(info)) for info in zin.infolist()]
    media = [info.filename for info, _ in members if "/media/" in info.filename]
    assert len(media) == 1, media
    with zipfile.ZipFile(container, "w", zipfile.ZIP_DEFLATED) as zout:
        for info, content in members:
            zout.writestr(info, data if info.filename == media[0] else content)


# Kinds reported while listing the input folder, before extraction.
DISCOVER_KINDS = {"not_a_file", "broken_link", "symlink_loop", "unreadable"}


def make_documents(folder: Path, with_pdf: bool = True, with_bad: bool = True) -> dict[str, str]:
    """Write the test corpus; returns file name -> expected outcome ('ok' or an error kind)."""
    import docx
    import pptx
    from pptx.util import Inches
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    assets = folder.parent / f"{folder.name}-assets"
    assets.mkdir(exist_ok=True)
    red = _picture(assets / "red.png", "red")
    blue = _picture(assets / "blue.png", "blue")
    expected = {}

    d = docx.Document()
    d.add_heading("Honey bees", 1)
    d.add_paragraph(TOPIC * 2)
    d.add_picture(str(red))
    d.add_paragraph("The picture above shows a hive frame. " + TOPIC)
    d.save(folder / "bees.docx")
    expected["bees.docx"] = "ok"

    p = pptx.Presentation()
    slide = p.slides.add_slide(p.slide_layouts[5])
    slide.shapes.title.text = "Volcanoes"
    slide.shapes.add_picture(str(blue), Inches(1), Inches(2))
    box = slide.shapes.add_textbox(Inches(1), Inches(5), Inches(6), Inches(1))
    box.text_frame.text = ("Magma rises through cracks in the crust. Lava cools into basalt. "
                           "Ash clouds can ground aircraft for days.")
    p.save(folder / "volcanoes.pptx")
    expected["volcanoes.pptx"] = "ok"

    shutil.copy(red, folder / "red-figure.png")
    (folder / "rivers.md").write_text(
        "# Rivers\n\nRivers carry water from mountains to the sea. Deltas form where rivers slow down "
        "and drop sediment.\n\n![a figure](red-figure.png)\n\nThe Nile is among the longest rivers on Earth. "
        "Floods once fertilised its valley every summer.\n")
    expected["rivers.md"] = "ok"
    expected["red-figure.png"] = "ok"

    shutil.copy(blue, folder / "blue-figure.png")
    (folder / "forests.html").write_text(
        "<html><body><h1>Forests</h1><p>Forests cover about a third of the land. Trees store carbon in "
        "their wood.</p><img src='blue-figure.png' alt='forest map'><p>Boreal forests grow in cold northern "
        "regions. Rainforests have the greatest number of species.</p></body></html>")
    expected["forests.html"] = "ok"
    expected["blue-figure.png"] = "ok"

    Image.new("RGB", (3000, 1000), "green").save(folder / "large-photo.jpg", quality=80)
    expected["large-photo.jpg"] = "ok"

    # A PDF written by Pillow: one page holding one bitmap (a "scan"); its text is the caption.
    Image.open(_picture(assets / "scan.png", "blue", (400, 300))).save(folder / "scan.pdf")
    expected["scan.pdf"] = "ok"

    if with_pdf and LIBTASN1_PDF.exists():
        shutil.copy(LIBTASN1_PDF, folder / "libtasn1.pdf")
        expected["libtasn1.pdf"] = "ok"

    if with_bad:
        png = (assets / "red.png").read_bytes()
        (folder / "truncated.png").write_bytes(png[: len(png) // 2])
        expected["truncated.png"] = "corrupt_image"
        (folder / "empty.docx").write_bytes(b"")
        expected["empty.docx"] = "empty_file"
        (folder / "notes.pdf").write_text("this is plain text pretending to be a PDF\n")
        expected["notes.pdf"] = "conversion_failed"
        moons = docx.Document()  # a DOCX named .pdf: docling goes by content, so it converts
        moons.add_paragraph("Jupiter has dozens of moons. Ganymede is larger than Mercury. "
                            "Io has active volcanoes powered by tides.")
        moons.save(folder / "misnamed.pdf")
        expected["misnamed.pdf"] = "ok"
        (folder / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip archive")
        expected["broken.docx"] = "conversion_failed"
        _picture(folder / "picture.docx", "green", (200, 120))  # a PNG named .docx: handled by content
        expected["picture.docx"] = "ok"
        (folder / "poison.md").write_text("# Poison\n\nThis chunk carries POISON-JSON so the model always "
                                          "answers with broken JSON. It must end up in errors.jsonl.\n")
        expected["poison.md"] = "invalid_json"
        _add_adversarial(folder, assets, expected)
    return expected


def _add_adversarial(folder: Path, assets: Path, expected: dict[str, str]) -> None:
    """Files a real folder holds that no document converter expects (issue 27)."""
    import docx
    from PIL import Image

    (folder / "pixel-bomb.png").write_bytes(pixel_bomb_png())
    expected["pixel-bomb.png"] = "image_too_large"
    scan = docx.Document()  # a scan pasted into Word at full resolution
    scan.add_paragraph("Survey of the old harbour. The east pier was rebuilt in stone after the storm. "
                       "Fishing boats moor along the west quay. The map below shows the soundings.")
    scan.add_picture(str(bomb_jpeg(assets / "scan.jpg")))
    scan.save(folder / "scan-bomb.docx")
    expected["scan-bomb.docx"] = "ok"
    Image.new("RGB", (400, 300), "blue").save(assets / "photo.jpg", quality=90)
    jpeg = (assets / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    expected["truncated.jpg"] = "corrupt_image"
    (folder / "junk.md").write_bytes(random.Random(27).randbytes(4000))  # binary, and not in any text encoding
    expected["junk.md"] = "conversion_failed"
    (folder / "folder.pdf").mkdir()
    expected["folder.pdf"] = "not_a_file"
    (folder / "loop.md").symlink_to("loop.md")
    expected["loop.md"] = "symlink_loop"
    (folder / "gone.docx").symlink_to("nowhere.docx")
    expected["gone.docx"] = "broken_link"
    # Tests run as root, whom file permissions do not stop: a link to /proc/self/mem, which fails
    # every read at offset 0 (EIO), stands in for a file the process may not read.
    (folder / "unreadable.pdf").symlink_to("/proc/self/mem")
    expected["unreadable.pdf"] = "unreadable"
