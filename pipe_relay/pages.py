# HTML pages rendered from the templates in static/; every inserted value is escaped here, in one place.
# Invariant: a page never contains a request value unescaped, and always ships with a strict CSP.
from __future__ import annotations

import html
import re
import secrets
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from string import Template
from urllib.parse import quote

from ._version import __version__

_SAFE_PATH = re.compile(r"[^A-Za-z0-9._~\-/]")


def static_dir() -> Traversable:
    """The package's `static` resources: in a checkout, a link to the top-level static/; in a wheel,
    its copy."""
    return files("pipe_relay") / "static"


@cache
def _template(name: str) -> Template:
    return Template((static_dir() / name).read_text(encoding="utf-8"))


@cache
def _asset(name: str) -> str:
    """A CSS or JS file from static/, to be inlined into a page under that page's nonce."""
    text = (static_dir() / name).read_text(encoding="utf-8")
    lowered = text.lower()
    if "</script" in lowered or "</style" in lowered or "<!--" in lowered:
        raise ValueError(f"static/{name} cannot be inlined: it contains an HTML end tag or comment")
    return text


@cache
def _inline(*names: str) -> str:
    return "\n".join(_asset(name) for name in names)


_STYLE = ("base.css",)
_INDEX_STYLE = (*_STYLE, "index.css")
_INDEX_SCRIPT = (
    "common.js",
    "e2e.js",
    "tar.js",
    "ui.js",
    "auth.js",
    "upload.js",
    "send.js",
    "receive.js",
    "app.js",
)
_PROGRESS_SCRIPT = ("common.js", "progress.js")
_VIDEO_STYLE = (*_STYLE, "video.css")
_VIDEO_SCRIPT = ("common.js", "video.js")


def _csp(nonce: str, *, scripts: bool, media: bool, frames: bool) -> str:
    script = f"script-src 'nonce-{nonce}'; connect-src 'self'; " if scripts else ""
    media_src = "media-src 'self' blob:; " if media else ""
    frame_src = "frame-src 'self'; " if frames else ""
    return (
        f"default-src 'none'; {script}{media_src}{frame_src}style-src 'nonce-{nonce}'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def page_headers(
    nonce: str, *, scripts: bool = False, media: bool = False, frames: bool = False
) -> list[tuple[str, str]]:
    """A strict CSP: nothing but this page's own nonce'd style (and script, if it has one; and a
    frame of this server's, for the noscript form's status lines)."""
    return [
        ("Content-Security-Policy", _csp(nonce, scripts=scripts, media=media, frames=frames)),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]


def sanitize_pipe_path(value: str) -> str:
    """A path for the noscript form: leading slashes stripped, only URL-safe characters kept."""
    return _SAFE_PATH.sub("", value).lstrip("/")[:1024]


def _home(prefixed: bool) -> str:
    return "/api/v1/pipe" if prefixed else "/"


def _page(
    template: str,
    *,
    title: str,
    style: tuple[str, ...],
    script: tuple[str, ...] = (),
    media: bool = False,
    frames: bool = False,
    **values: str,
) -> tuple[str, list[tuple[str, str]]]:
    """Render a page body into the shared layout with a fresh nonce, its CSS and JS inlined under
    it, and the CSP to match. `title` and every value in `values` must already be escaped for HTML.
    """
    nonce = secrets.token_urlsafe(16)
    content = _template(template).substitute(**values)
    inline = _inline(*script)
    body = _template("layout.html").substitute(
        title=title,
        nonce=nonce,
        style=_inline(*style),
        content=content,
        script=f'<script nonce="{nonce}">\n{inline}\n</script>' if script else "",
    )
    return body, page_headers(nonce, scripts=bool(script), media=media, frames=frames)


def index_page(
    *, url: str, prefixed: bool, max_receivers: int, policy: bool = False
) -> tuple[str, list[tuple[str, str]]]:
    """The web UI: send (text, files, E2E encryption) and receive in the browser; its Receivers
    fields go up to the server's own `--max-receivers`; `policy`: the server has an access policy
    (the page then never lets the browser's own login prompt take a 401: it asks itself)."""
    return _page(
        "index.html",
        title="pipe-relay",
        style=_INDEX_STYLE,
        script=_INDEX_SCRIPT,
        version=html.escape(__version__),
        url=html.escape(url),
        prefix="/api/v1/pipe" if prefixed else "",
        max_receivers=str(int(max_receivers)),
        policy="on" if policy else "off",
    )


def noscript_page(*, url: str, path: str, mode: str, prefixed: bool) -> tuple[str, list[tuple[str, str]]]:
    """The form that sends without JavaScript; its CSP allows no script at all. The form posts into
    a frame of the page, so the server's status lines show under it and the page stays, links and all."""
    clean = sanitize_pipe_path(path) or secrets.token_urlsafe(6)
    if mode == "text":
        field = '<label for="text">Text</label><textarea id="text" name="text"></textarea>'
    else:
        field = '<label for="file">File</label><input id="file" type="file" name="file">'
    return _page(
        "noscript.html",
        title="pipe-relay: send without JavaScript",
        style=_STYLE,
        path=html.escape(clean),
        path_q=html.escape(quote(clean, safe="")),
        url=html.escape(url),
        prefix="/api/v1/pipe" if prefixed else "",
        field=field,
        frames=True,
    )


def progress_page(*, path: str, prefixed: bool) -> tuple[str, list[tuple[str, str]]]:
    """The `?progress` dashboard; its script reads the same URL as an event stream."""
    shown = html.escape(path)
    return _page(
        "progress.html",
        title=f"pipe-relay: progress of {shown}",
        style=_STYLE,
        script=_PROGRESS_SCRIPT,
        path=shown,
        home=_home(prefixed),
    )


def video_page(*, url: str, path: str, prefixed: bool) -> tuple[str, list[tuple[str, str]]]:
    """The `?video` player; its script fetches the same URL with `video=false` and plays it."""
    shown = html.escape(path)
    return _page(
        "video.html",
        title=f"pipe-relay: video {shown}",
        style=_VIDEO_STYLE,
        script=_VIDEO_SCRIPT,
        media=True,
        path=shown,
        url=html.escape(url),
        home=_home(prefixed),
    )
