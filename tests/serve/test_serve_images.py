"""Images in /v1/chat/completions, in-process (fastapi's TestClient) over a real AsyncLLM on
tiny random vision-language checkpoints: image_url parts as data: URLs, local files (only
under --allowed-local-media-path) and http(s) URLs (only for --allowed-media-domains; a
local HTTP server stands in for the web), streamed or not, with the same tokens as
LLM.chat; bad images are a 400 naming the part and the reason, and the engine serves the
next request as before."""
from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from halinfer import LLM, SamplingParams
from halinfer.testing.tiny_vlm import SAVERS, random_image

TestClient = pytest.importorskip("fastapi.testclient").TestClient

ENGINE_KW = dict(device="cpu", dtype="float32", num_kv_blocks=96, block_size=8, max_num_seqs=4)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _data_url(img) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(img)).decode()


class _Images(BaseHTTPRequestHandler):
    routes: dict = {}   # path -> (status, content type, body, extra headers)

    def do_GET(self):   # noqa: N802 - http.server's name
        status, ctype, body, extra = self.routes.get(self.path, (404, "text/plain", b"no such image", {}))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def web():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Images.routes
    srv.shutdown()


@pytest.fixture(scope="module", params=["qwen2-vl", "llava"])
def served(request, tmp_path_factory):
    """(test client, the model directory, the folder local images may come from)."""
    from halinfer.engine.async_llm import AsyncLLM
    from halinfer.serve.app import build_app

    fam = request.param
    path = SAVERS[fam](str(tmp_path_factory.mktemp(fam.replace(".", ""))), seed=3)
    media = tmp_path_factory.mktemp("media")
    eng = AsyncLLM(path, allowed_media_domains=("127.0.0.1",), **ENGINE_KW)
    try:
        with TestClient(build_app(eng, "m", allowed_local_media_path=str(media))) as c:
            yield c, path, media
    finally:
        eng.shutdown()


def _chat(part, text="What is in this picture?", **kw):
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text}, part]}],
            "max_tokens": 6, "temperature": 0, "ignore_eos": True, "return_token_ids": True, **kw}


def _image_part(url):
    return {"type": "image_url", "image_url": {"url": url}}


def _tokens(r) -> list[int]:
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["token_ids"]


def _streamed_tokens(r) -> tuple[list[int], str]:
    assert r.status_code == 200, r.text
    toks, text = [], ""
    for ln in r.text.splitlines():
        if ln.startswith("data: ") and ln != "data: [DONE]":
            ch = json.loads(ln[6:])["choices"]
            if ch:
                toks += ch[0].get("token_ids") or []
                text += ch[0]["delta"].get("content") or ""
    return toks, text


def test_image_sources_give_llm_chat_tokens_streamed_or_not(served, web):
    client, path, media = served
    base, routes = web
    img = random_image(61, 40, 48)
    (media / "a.png").write_bytes(_png(img))
    routes["/a.png"] = (200, "image/png", _png(img), {})
    llm = LLM(path, **ENGINE_KW)
    msgs = _chat(_image_part(_data_url(img)))["messages"]
    want = llm.chat(msgs, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0].outputs[0]
    other = llm.chat(_chat(_image_part(_data_url(random_image(62, 40, 48))))["messages"],
                     SamplingParams(temperature=0, max_tokens=6, ignore_eos=True))[0].outputs[0]
    assert want.token_ids != other.token_ids, "the image must matter for this test to mean anything"
    for url in (_data_url(img), str(media / "a.png"), f"file://{media / 'a.png'}", base + "/a.png"):
        assert _tokens(client.post("/v1/chat/completions", json=_chat(_image_part(url)))) == want.token_ids, url
    # image_url as a bare string, and streaming
    r = client.post("/v1/chat/completions", json=_chat({"type": "image_url", "image_url": _data_url(img)},
                                                       stream=True))
    toks, text = _streamed_tokens(r)
    assert toks == want.token_ids and text == want.text
    usage = client.post("/v1/chat/completions", json=_chat(_image_part(_data_url(img)))).json()["usage"]
    assert usage["prompt_tokens"] > 20, "the prompt's tokens counted after the image's expansion"


def test_bad_images_are_a_400_naming_the_part_and_the_engine_carries_on(served, web, tmp_path, monkeypatch):
    from halinfer.engine import multimodal

    client, path, media = served
    base, routes = web
    routes["/text"] = (200, "text/html", b"<html>not an image</html>", {})
    routes["/moved"] = (302, "text/plain", b"", {"Location": base + "/a.png"})
    routes["/big"] = (200, "image/png", b"\x89PNG" + b"0" * 5000, {})
    outside = tmp_path / "outside.png"
    outside.write_bytes(_png(random_image(1, 8, 8)))
    (media / "link.png").symlink_to(outside)
    monkeypatch.setattr(multimodal, "MAX_IMAGE_BYTES", 4096)
    good = _data_url(random_image(63, 32, 32))
    cases = [
        (_image_part("data:image/png;base64," + base64.b64encode(b"definitely not a png").decode()),
         "not a readable image"),
        (_image_part("data:image/png;base64,@@@"), "base64 payload is invalid"),
        (_image_part("data:text/plain;base64,aGk="), "must be 'data:image/"),
        (_image_part("https://example.com/cat.png"), "allowed-media-domains"),
        (_image_part(base + "/text"), "not an image"),
        (_image_part(base + "/moved"), "HTTP 302 \\(redirects are not followed\\)"),
        (_image_part(base + "/missing.png"), "HTTP 404"),
        (_image_part(base + "/big"), "larger than the 4096 bytes"),
        (_image_part(str(outside)), "outside the allowed folder"),
        (_image_part(str(media / "link.png")), "outside the allowed folder"),
        (_image_part(str(media / "none.png")), "does not exist"),
        (_image_part("ftp://host/a.png"), "scheme 'ftp' is not supported"),
        ({"type": "image_url"}, "needs its 'image_url' field"),
        ({"type": "input_audio", "input_audio": {}}, "'text' and 'image_url' parts are accepted"),
    ]
    for part, why in cases:
        r = client.post("/v1/chat/completions", json=_chat(part))
        assert r.status_code == 400, (part, r.text)
        err = r.json()["error"]
        assert err["param"] == "messages" and err["type"] == "invalid_request_error"
        assert __import__("re").search(why, err["message"]), (why, err["message"])
        if part.get("image_url"):
            assert "messages[0].content[1]" in err["message"], err["message"]
    too_many = {"messages": [{"role": "user", "content": [_image_part(good)] * 17}], "max_tokens": 2}
    r = client.post("/v1/chat/completions", json=too_many)
    assert r.status_code == 400 and "at most 16" in r.json()["error"]["message"]
    # the placeholder count must match: an image part plus a literal placeholder in the text
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": "<image> <|vision_start|><|image_pad|><|vision_end|>"}, _image_part(good)]}],
        "max_tokens": 2})
    assert r.status_code == 400 and "placeholder" in r.json()["error"]["message"], r.text
    assert _tokens(client.post("/v1/chat/completions", json=_chat(_image_part(good))))


def test_images_are_refused_clearly_where_the_server_does_not_take_them(served, tmp_path):
    """A text-only model; local files with no --allowed-local-media-path; /tokenize."""
    from halinfer.engine.async_llm import AsyncLLM
    from halinfer.serve.app import build_app
    from halinfer.testing.tiny import save_tiny_model

    client, path, media = served
    r = client.post("/tokenize", json={"messages": [{"role": "user", "content": [_image_part("data:,")]}]})
    assert r.status_code == 400 and "only 'text'" in r.json()["error"]["message"]
    (media / "b.png").write_bytes(_png(random_image(2, 16, 16)))
    eng = AsyncLLM(path, **ENGINE_KW)
    try:
        with TestClient(build_app(eng, "m")) as c:   # no allowed folder: no local files at all
            r = c.post("/v1/chat/completions", json=_chat(_image_part(str(media / "b.png"))))
            assert r.status_code == 400 and "local image files are off" in r.json()["error"]["message"]
            assert "--allowed-local-media-path" in r.json()["error"]["message"]
    finally:
        eng.shutdown()
    text_dir = save_tiny_model("llama", str(tmp_path / "llama"))
    eng = AsyncLLM(text_dir, **ENGINE_KW)
    try:
        with TestClient(build_app(eng, "m")) as c:
            r = c.post("/v1/chat/completions", json=_chat(_image_part(_data_url(random_image(3, 8, 8)))))
            assert r.status_code == 400 and "takes no images" in r.json()["error"]["message"]
    finally:
        eng.shutdown()
