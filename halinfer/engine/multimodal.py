"""Images in the front end: loading, the HF image processor (without torchvision), and
placeholder expansion.

A prompt holds ONE placeholder per image, as the model's processor or chat template
writes it (LLaVA ``<image>``; Qwen2-VL ``<|vision_start|><|image_pad|><|vision_end|>``);
``MultimodalProcessor.apply`` expands each to the image's feature-token count and returns
the core's ``MMInput`` per image (encoder inputs, offset, content hash, M-RoPE offsets).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
from urllib.parse import urlparse

import numpy as np

from ..core.mm_inputs import MMInput

MAX_IMAGES_PER_PROMPT = 16


# -- loading images ------------------------------------------------------------------------
ANY_LOCAL = "*"                # local_root value: any local path (offline use: LLM.generate / chat)
FETCH_TIMEOUT_S = 10.0         # http(s) images: connect/read timeout
MAX_IMAGE_BYTES = 32 << 20     # http(s) images: larger bodies are refused, not read to the end


def load_image(src, allowed_domains: tuple[str, ...] = (), local_root: str | None = ANY_LOCAL):
    """A PIL RGB image from a PIL image, bytes, a data: URL, a local path or file:// URL (any
    path when ``local_root`` is ANY_LOCAL, only under that folder when it is one, none when
    None), or an http(s) URL whose host is in ``allowed_domains``.  Anything else is a
    ValueError/TypeError saying what was given and what is accepted."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, Image.Image):
        img = src
    elif isinstance(src, (bytes, bytearray)):
        img = _open_bytes(bytes(src), "image bytes")
    elif isinstance(src, str):
        img = _open_str(src, allowed_domains, local_root)
    else:
        raise TypeError(f"an image must be a PIL.Image, bytes, a data: URL, a file path or a URL; "
                        f"got {type(src).__name__}")
    try:
        return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"the image could not be decoded: {e}") from None


def _open_bytes(data: bytes, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"{what} are not a readable image ({type(e).__name__}: {e})") from None


def _shown(src: str) -> str:
    return repr(src) if len(src) <= 80 else repr(src[:77] + "...")


def _fetch(src: str) -> bytes:
    """GET an allowed http(s) URL with a timeout and a size cap; redirects are not followed
    (one could lead off the allowed hosts)."""
    import httpx

    try:
        with httpx.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=False) as c, c.stream("GET", src) as r:
            if r.status_code != 200:
                raise ValueError(f"fetching {_shown(src)} gave HTTP {r.status_code}"
                                 + (" (redirects are not followed)" if r.is_redirect else ""))
            ctype = r.headers.get("content-type", "")
            if ctype and not ctype.startswith(("image/", "application/octet-stream")):
                raise ValueError(f"{_shown(src)} is {ctype!r}, not an image")
            if int(r.headers.get("content-length") or 0) > MAX_IMAGE_BYTES:
                raise ValueError(f"{_shown(src)} is larger than the {MAX_IMAGE_BYTES} bytes an image may have")
            buf = bytearray()
            for chunk in r.iter_bytes():
                buf += chunk
                if len(buf) > MAX_IMAGE_BYTES:
                    raise ValueError(f"{_shown(src)} is larger than the {MAX_IMAGE_BYTES} bytes an image may have")
            return bytes(buf)
    except httpx.HTTPError as e:
        raise ValueError(f"could not fetch {_shown(src)}: {type(e).__name__}: {e}") from None


def _open_str(src: str, allowed_domains: tuple[str, ...], local_root: str | None = ANY_LOCAL):
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        if not head.startswith("data:image/") or ";base64" not in head:
            raise ValueError(f"a data URL must be 'data:image/<type>;base64,...'; got {head[:40]!r}")
        try:
            data = base64.b64decode(payload, validate=True)
        except ValueError as e:
            raise ValueError(f"the data URL's base64 payload is invalid: {e}") from None
        return _open_bytes(data, "the data URL's bytes")
    url = urlparse(src)
    if url.scheme in ("http", "https"):
        if url.hostname not in allowed_domains:
            raise ValueError(f"fetching {url.scheme} image URLs is off for {url.hostname!r}; allow the domain "
                             f"(--allowed-media-domains) or pass a data: URL, a file path or a PIL image")
        return _open_bytes(_fetch(src), f"the bytes fetched from {_shown(src)}")
    path = url.path if url.scheme == "file" else src
    if url.scheme not in ("", "file") and not os.path.exists(src):
        raise ValueError(f"image URL scheme {url.scheme!r} is not supported; accepted: data:, file://, a path, "
                         f"http(s) on allowed domains")
    if local_root is None:
        raise ValueError(f"local image files are off here ({_shown(src)}); allow a folder "
                         f"(--allowed-local-media-path) or send a data: URL")
    if local_root != ANY_LOCAL:
        root, real = os.path.realpath(local_root), os.path.realpath(path)
        if os.path.commonpath([root, real]) != root:   # symlinks and '..' resolved first
            raise ValueError(f"image file {_shown(path)} is outside the allowed folder (--allowed-local-media-path)")
    if not os.path.isfile(path):
        raise ValueError(f"image file {path!r} does not exist")
    with open(path, "rb") as f:
        return _open_bytes(f.read(), f"the bytes of {path!r}")


def images_of(value) -> list:
    """multi_modal_data["image"]: one image or a list of them."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


# -- the HF image processor, without torchvision ------------------------------------------------
def processor_settings(model_dir: str) -> tuple[dict, dict]:
    """(image-processor settings, processor settings): preprocessor_config.json, or the
    "image_processor" entry of processor_config.json (transformers 5 may write only that)."""
    proc = {}
    p = os.path.join(model_dir, "processor_config.json")
    if os.path.isfile(p):
        with open(p) as f:
            proc = json.load(f)
    pre = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.isfile(pre):
        with open(pre) as f:
            return json.load(f), proc
    if "image_processor" in proc:
        return dict(proc["image_processor"]), proc
    raise FileNotFoundError(f"{model_dir!r} has no image-processor settings (preprocessor_config.json, or "
                            f"processor_config.json with an 'image_processor' entry)")


def _torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or built for another torch: unusable either way
        return False
    return True


def load_image_processor(model_dir: str):
    """The checkpoint's image processor as transformers' own AutoProcessor would pick it on
    this machine: the torchvision backend where torchvision works, else the PIL/numpy form
    (transformers 5.2x: ``<Name>Pil``; earlier: the slow class).  The two resize differently
    (about 1% of a pixel value), so matching transformers' choice keeps outputs equal to it."""
    import transformers

    settings, _ = processor_settings(model_dir)
    name = settings.get("image_processor_type")
    if not name:
        raise ValueError(f"{model_dir!r}: the image-processor settings name no image_processor_type")
    base = name[:-4] if name.endswith("Fast") else name
    order = (base, base + "Pil") if _torchvision_usable() else (base + "Pil", base)
    for cand in order:
        cls = getattr(transformers, cand, None)
        if cls is not None:
            kw = {k: v for k, v in settings.items() if k not in ("image_processor_type", "processor_class")}
            return cls(**kw)
    raise ValueError(f"transformers {transformers.__version__} has no image processor {name!r}")


def content_hash(data: dict) -> str:
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(data):
        a = np.ascontiguousarray(data[k].numpy() if hasattr(data[k], "numpy") else data[k])
        h.update(k.encode())
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -- families ----------------------------------------------------------------------------------------
class ImageFamily:
    """How one family turns an image into encoder inputs and tokens.  ``placeholder``: the
    token the prompt carries once per image; ``expand(n)`` what replaces it (ids) and where the
    n feature tokens start in that."""

    placeholder: str
    prompt_text: str          # what a prompt writes per image (chat inserts it for image parts)

    def __init__(self, cfg, tokenizer, image_processor, proc_settings: dict):
        self.cfg, self.tok, self.ip, self.proc = cfg, tokenizer, image_processor, proc_settings
        self.placeholder_id = self.token_id(self.placeholder)

    @classmethod
    def load_processor(cls, model_dir: str, cfg) -> tuple[object, dict]:
        """(image processor, processor settings) of a checkpoint."""
        return load_image_processor(model_dir), processor_settings(model_dir)[1]

    def token_id(self, token: str) -> int:
        i = self.tok.convert_tokens_to_ids(token)
        if i is None or i == getattr(self.tok, "unk_token_id", None):
            raise ValueError(f"the tokenizer has no {token!r} token, which this model's images need")
        return int(i)

    def process(self, image) -> tuple[dict, int, np.ndarray | None]:
        """(encoder inputs, feature tokens, M-RoPE offsets [3, n] or None)."""
        raise NotImplementedError

    def pixels(self, image, **kw) -> dict:
        return self.ip(images=[image], return_tensors="pt", **kw)

    def expand(self, n: int) -> tuple[list[int], int]:
        return [self.placeholder_id] * n, 0


class LlavaImages(ImageFamily):
    placeholder = "<image>"
    prompt_text = "<image>"

    def process(self, image):
        pv = self.pixels(image)["pixel_values"]
        vc = self.cfg.vision_config
        n = (pv.shape[-1] // vc["patch_size"]) * (pv.shape[-2] // vc["patch_size"])
        if self.cfg.get("vision_feature_select_strategy", "default") == "full":
            n += 1
        return {"pixel_values": pv}, n, None


class LlavaNextImages(LlavaImages):
    def process(self, image):
        from ..models.vision.anyres import anyres_token_count

        out = self.pixels(image)
        vc = self.cfg.vision_config
        h, w = (int(v) for v in out["image_sizes"][0])
        side = vc["image_size"] // vc["patch_size"]
        n = anyres_token_count(h, w, self.cfg.image_grid_pinpoints, vc["image_size"], side)
        return {"pixel_values": out["pixel_values"], "image_sizes": out["image_sizes"]}, n, None


class Qwen2VLImages(ImageFamily):
    placeholder = "<|image_pad|>"
    prompt_text = "<|vision_start|><|image_pad|><|vision_end|>"

    def process(self, image):
        out = self.pixels(image)
        grid = out["image_grid_thw"]
        t, h, w = (int(x) for x in grid[0])
        m = int(self.cfg.vision_config.get("spatial_merge_size", 2))
        gt, gh, gw = t, h // m, w // m
        tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh), np.arange(gw), indexing="ij")
        rel = np.stack((tt.ravel(), hh.ravel(), ww.ravel())).astype(np.int64)
        return {"pixel_values": out["pixel_values"], "image_grid_thw": grid}, gt * gh * gw, rel


class InternVLImages(ImageFamily):
    """``<IMG_CONTEXT>`` per image -> ``<img>`` + context tokens for every tile + ``</img>``;
    the processor's default tiling (crop_to_patches) is on, as InternVLProcessor sets it."""

    placeholder = "<IMG_CONTEXT>"
    prompt_text = "<IMG_CONTEXT>"
    tiling = True

    def __init__(self, *a):
        super().__init__(*a)
        self.start, self.stop = self.token_id("<img>"), self.token_id("</img>")
        vc = self.cfg.vision_config
        size = vc["image_size"] if isinstance(vc["image_size"], int) else vc["image_size"][0]
        patch = vc["patch_size"] if isinstance(vc["patch_size"], int) else vc["patch_size"][0]
        ratio = float(self.cfg.get("downsample_ratio", 0.5))
        self.per_tile = int(self.proc.get("image_seq_length") or round((size // patch) ** 2 * ratio * ratio))

    def process(self, image):
        pv = self.pixels(image, crop_to_patches=self.tiling)["pixel_values"]
        return {"pixel_values": pv}, self.per_tile * pv.shape[0], None

    def expand(self, n):
        return [self.start] + [self.placeholder_id] * n + [self.stop], 1


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InternVLChatImages(InternVLImages):
    """The remote-code layout ships no processor the model uses: its load_image tiles
    (dynamic_preprocess: up to max_dynamic_patch tiles of force_image_size, plus a thumbnail),
    resizes bicubic and normalizes with ImageNet statistics, which GotOcr2's processor
    (the one the -hf conversion uses) does with these settings."""

    def __init__(self, *a):
        super().__init__(*a)
        self.tiling = bool(self.cfg.get("dynamic_image_size", True))

    @classmethod
    def load_processor(cls, model_dir, cfg):
        import transformers

        if not cfg.get("use_thumbnail", True) and cfg.get("dynamic_image_size", True):
            raise ValueError(f"{model_dir!r}: use_thumbnail=false with dynamic tiling is not supported")
        size = int(cfg.get("force_image_size") or cfg.vision_config["image_size"])
        ip_cls = getattr(transformers, "GotOcr2ImageProcessorPil", None) or transformers.GotOcr2ImageProcessor
        ip = ip_cls(size={"height": size, "width": size}, crop_to_patches=True,
                    min_patches=int(cfg.get("min_dynamic_patch", 1)), max_patches=int(cfg.get("max_dynamic_patch", 12)),
                    image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))
        return ip, {}


class Gemma3Images(ImageFamily):
    """``<start_of_image>`` per image -> the processor's full image sequence, written into the
    TEXT before tokenizing (as Gemma3Processor does, so "\n\n" merges with its neighbours
    the same way): "\n\n<start_of_image>" + image tokens x mm_tokens_per_image +
    "<end_of_image>\n\n".  The image tokens attend to each other both ways."""

    placeholder = "<start_of_image>"
    prompt_text = "<start_of_image>"
    text_level = True

    def __init__(self, *a):
        super().__init__(*a)
        tok = self.tok
        self.image_token = getattr(tok, "image_token", None) or "<image_soft_token>"
        self.end_token = getattr(tok, "eoi_token", None) or "<end_of_image>"
        self.image_id, self.end_id = self.token_id(self.image_token), self.token_id(self.end_token)
        self.n = int(self.proc.get("image_seq_length") or self.cfg.get("mm_tokens_per_image", 256))
        if getattr(self.ip, "do_pan_and_scan", False):
            raise ValueError("Gemma 3 with do_pan_and_scan (image crops) is not supported")

    def full_sequence(self) -> str:
        return f"\n\n{self.placeholder}{self.image_token * self.n}{self.end_token}\n\n"

    def process(self, image):
        return {"pixel_values": self.pixels(image)["pixel_values"]}, self.n, None

    def expand(self, n):   # token-id prompts: the sequence tokenized on its own
        ids = list(self.tok.encode(self.full_sequence(), add_special_tokens=False))
        return ids, ids.index(self.image_id)


FAMILIES = {"gemma3": Gemma3Images, "llava": LlavaImages, "internvl_chat": InternVLChatImages, "llava_next": LlavaNextImages, "internvl": InternVLImages, "qwen2_vl": Qwen2VLImages, "qwen2_5_vl": Qwen2VLImages, "qwen3_vl": Qwen2VLImages,
            "qwen3_vl_moe": Qwen2VLImages}


def family_placeholder(model_type: str) -> str | None:
    fam = FAMILIES.get(model_type)
    return None if fam is None else fam.placeholder


class MultimodalProcessor:
    """Built per engine for a model whose config names a vision family; see the module doc."""

    def __init__(self, model_dir: str, cfg, tokenizer, max_images: int = MAX_IMAGES_PER_PROMPT,
                 allowed_domains: tuple[str, ...] = ()):
        fam = FAMILIES.get(cfg.get("model_type"))
        if fam is None:
            raise ValueError(f"model type {cfg.get('model_type')!r} takes no images")
        if tokenizer is None:
            raise ValueError(f"{model_dir!r} has no tokenizer; image prompts need one")
        ip, proc = fam.load_processor(model_dir, cfg)
        self.family = fam(cfg, tokenizer, ip, proc)
        self.max_images = max_images
        self.allowed_domains = tuple(allowed_domains)

    @property
    def placeholder(self) -> str:
        return self.family.placeholder

    def load(self, value) -> list:
        imgs = images_of(value)
        if len(imgs) > self.max_images:
            raise ValueError(f"{len(imgs)} images in one prompt; this engine accepts at most {self.max_images}")
        out = []
        for i, src in enumerate(imgs):
            try:
                out.append(load_image(src, self.allowed_domains))
            except (TypeError, ValueError) as e:
                raise type(e)(f"image {i}: {e}") from None
        return out

    @property
    def text_level(self) -> bool:
        return getattr(self.family, "text_level", False)

    def apply_text(self, text: str, images: list, encode) -> tuple[list[int], list[MMInput]]:
        """Text-level families (Gemma 3): each placeholder of ``text`` replaced by the image's
        full sequence, then ``encode``d; the image tokens found in the ids."""
        fam = self.family
        parts = text.split(fam.placeholder)
        if len(parts) - 1 != len(images):
            raise ValueError(f"the prompt has {len(parts) - 1} image placeholder(s) {fam.placeholder!r} but "
                             f"{len(images)} image(s) were given; write one placeholder per image")
        ids = list(encode(fam.full_sequence().join(parts)))
        mm, i = [], 0
        for img in images:
            data, n, rel = fam.process(img)
            while i < len(ids) and ids[i] != fam.image_id:
                i += 1
            if ids[i:i + n] != [fam.image_id] * n:
                raise ValueError(f"the tokenized prompt does not hold {n} image tokens where an image stands")
            mm.append(MMInput(i, n, content_hash(data), data, rel, bidirectional=True))
            i += n
        if ids.count(fam.image_id) != n * len(images):
            raise ValueError(f"the prompt's text holds {fam.image_token!r} tokens of its own; write only "
                             f"{fam.placeholder!r} per image")
        return ids, mm

    def apply(self, ids: list[int], images: list) -> tuple[list[int], list[MMInput]]:
        """Expand each placeholder of ``ids`` for the image in the same order."""
        fam = self.family
        where = [i for i, t in enumerate(ids) if t == fam.placeholder_id]
        if len(where) != len(images):
            raise ValueError(f"the prompt has {len(where)} image placeholder(s) {fam.placeholder!r} but "
                             f"{len(images)} image(s) were given; write one placeholder per image")
        out: list[int] = []
        mm: list[MMInput] = []
        prev = 0
        for i, img in zip(where, images):
            data, n, rel = fam.process(img)
            out += ids[prev:i]
            rep, first = fam.expand(n)
            mm.append(MMInput(len(out) + first, n, content_hash(data), data, rel,
                              bidirectional=getattr(fam, "text_level", False)))
            out += rep
            prev = i + 1
        out += ids[prev:]
        return out, mm


# -- chat: OpenAI content parts ------------------------------------------------------------------
def chat_parts(messages: list[dict], placeholder: str | None, allowed_domains: tuple[str, ...] = (),
               local_root: str | None = ANY_LOCAL):
    """(messages with string contents, images in order) from OpenAI-style messages whose
    content may be a list of parts: {"type": "text", "text"}, {"type": "image_url",
    "image_url": {"url": data: URL | file:// URL | path | http(s) URL}} (or "image_url": url),
    {"type": "image", "image": PIL.Image | path | data URL}.  Each image part becomes the
    model's placeholder text where it stood.  The server calls this too."""
    out, images = [], []
    for mi, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, str) or content is None:
            out.append(dict(m))
            continue
        if not isinstance(content, (list, tuple)):
            raise TypeError(f"message {mi}: content must be a string or a list of parts, got {type(content).__name__}")
        text = []
        for pi, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text.append(str(part.get("text", "")))
                continue
            if kind not in ("image_url", "image"):
                raise ValueError(f"message {mi}, part {pi}: type {kind!r} is not supported; accepted: text, "
                                 f"image_url, image")
            if placeholder is None:
                raise ValueError(f"message {mi}, part {pi}: this model takes no images")
            src = part.get(kind)
            if kind == "image_url" and isinstance(src, dict):
                src = src.get("url")
            if src is None:
                raise ValueError(f"message {mi}, part {pi}: an {kind} part needs its {kind!r} field")
            try:
                images.append(load_image(src, allowed_domains, local_root))
            except (TypeError, ValueError) as e:
                raise type(e)(f"message {mi}, part {pi}: {e}") from None
            text.append(placeholder)
        out.append({**m, "content": "".join(text)})
    return out, images
