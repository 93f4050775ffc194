# Service texts: help, version, robots and the health document, rendered from plain inputs.
# Invariant: nothing from a request reaches these texts unsanitized (Host is reduced to host chars).
from __future__ import annotations

import re
from dataclasses import dataclass

from .._version import __version__

SERVICE_NAME = "pipe-relay"
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

ROBOTS_TXT = "User-agent: *\nDisallow: /\n"


def version_line() -> str:
    return f"{SERVICE_NAME} {__version__}\n"


def base_url(host: str | None, forwarded_proto: str | None, *, secure: bool = False) -> str:
    """The server's own URL as a client sees it: Host (if it is a plain host[:port]) and scheme
    (https over our TLS listener, or behind a proxy that says so)."""
    shown = host.strip() if host else ""
    if not _HOST.match(shown):
        shown = "localhost"
    scheme = "https" if secure or (forwarded_proto or "").strip().lower() == "https" else "http"
    return f"{scheme}://{shown}"


def help_text(url: str) -> str:
    return f"""{SERVICE_NAME} {__version__}
Streaming data transfer over HTTP: nothing is stored, sender and receiver meet at a path.

======= Receive =======
curl {url}/mypath

======= Send a file =======
curl -T myfile {url}/mypath

======= Send text =======
echo 'hello, world' | curl -T - {url}/mypath

======= Send a directory =======
tar czf - ./mydir | curl -T - {url}/mydir.tar.gz
curl {url}/mydir.tar.gz | tar xzf -

# or as a zip
zip -q -r - ./mydir | curl -T - {url}/mydir.zip
curl {url}/mydir.zip > mydir.zip && unzip mydir.zip

======= Several receivers (?n) =======
# the sender waits for 3 receivers; each gets the same bytes
curl -T myfile '{url}/mypath?n=3'
curl '{url}/mypath?n=3'        # run this three times

======= Download control (?download, ?filename) =======
curl -OJ '{url}/mypath?download'              # Content-Disposition: attachment
curl -OJ '{url}/mypath?filename=report.pdf'   # attachment with this file name
# ?download=false removes the sender's Content-Disposition

======= Watch video in a browser (?video) =======
# open {url}/movie.webm?video in a browser, then:
curl -T movie.webm {url}/movie.webm

======= Watch a transfer (?progress) =======
curl -H 'Accept: text/event-stream' '{url}/mypath?progress'
# or open {url}/mypath?progress in a browser

======= End-to-end encryption =======
# sender
openssl aes-256-cbc -pbkdf2 -iter 100000 -md sha256 -salt < myfile | curl -T - {url}/mypath
# receiver
curl -s {url}/mypath | openssl aes-256-cbc -d -pbkdf2 -iter 100000 -md sha256
# the web UI ({url}/) encrypts and decrypts in the browser in this same format

======= Paths =======
{url}/mypath and {url}/api/v1/pipe/mypath are the same pipe.
Version: {url}/version   Health: {url}/api/v1/pipe/health
"""


@dataclass(frozen=True, slots=True)
class HealthFacts:
    built: str
    started: str
    rss: int
    heap: int
    fds: int
    pid: int
    ip: str
    user_agent: str


def health_document(
    facts: HealthFacts, *, draining: bool = False, worker: dict[str, int] | None = None
) -> dict[str, object]:
    """The 9-field health response; `status` is `draining` while the server shuts down. Under
    --workers, a tenth: `worker`, which one answered (`index`), of how many (`workers`), how many
    are alive, and the connections it handed off, took, and requests it carried."""
    document: dict[str, object] = {
        "status": "draining" if draining else "ok",
        "service": SERVICE_NAME,
        "built": facts.built,
        "started": facts.started,
        "memory": {"rss": facts.rss, "heap": facts.heap},
        "fds": facts.fds,
        "pid": facts.pid,
        "ip": facts.ip,
        "userAgent": facts.user_agent,
    }
    if worker is not None:
        document["worker"] = dict(worker)
    return document
