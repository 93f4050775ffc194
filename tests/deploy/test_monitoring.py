# deploy/'s monitoring for real: promtool on the shipped files, Prometheus on a real server, the dashboard.
# Invariant: every process started here is killed and reaped; every wait is bounded by trio.fail_after.
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.cli_process import ROOT, startup_lines
from tests.clients import CurlResult, curl
from tests.deploy.proxies import free_port

DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
TEST_DEADLINE = 30.0
PROMETHEUS_START = 10.0
SCRAPE_DEADLINE = 12.0
"""From a server's event to Prometheus' answer showing it: a scrape a second, but the first one only
after Prometheus hands its targets over (every 5 s), and a loaded CI."""
READY = b"Server is ready to receive web requests."
SEVERITIES = {"critical", "warning", "info"}
SHIPPED_TOKEN_FILE = "/etc/prometheus/pipe-relay-admin-token"
DASHBOARD_FAMILIES = {
    "pipe_relay_info",
    "pipe_relay_workers",
    "pipe_relay_pipes",
    "pipe_relay_connections",
    "pipe_relay_transfers_started_total",
    "pipe_relay_transfers_completed_total",
    "pipe_relay_transfers_aborted_total",
    "pipe_relay_received_bytes_total",
    "pipe_relay_sent_bytes_total",
    "pipe_relay_requests_total",
    "pipe_relay_errors_total",
    "pipe_relay_rejections_total",
    "pipe_relay_abuse_ended_total",
    "pipe_relay_transfer_duration_seconds_bucket",
    "pipe_relay_transfer_size_bytes_bucket",
    "pipe_relay_transfer_receivers_bucket",
}
"""What the dashboard must show: each of these in at least one panel."""


def _tool(name: str) -> str:
    """The path of promtool or prometheus; skipped if missing, except in CI (where `make test`'s
    system-deps installs Debian's prometheus package, so a missing one is a failure)."""
    found = shutil.which(name)
    if found:
        return found
    why = f"{name} is not installed (`make system-deps` installs Debian's prometheus package)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


async def _run(*command: str, cwd: Path = DEPLOY) -> tuple[int, str]:
    """A command's exit code and its output (stdout and stderr together)."""
    done = await trio.run_process(
        list(command), cwd=cwd, capture_stdout=True, stderr=subprocess.STDOUT, check=False
    )
    return done.returncode, done.stdout.decode(errors="replace")


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _load(DEPLOY / "alerts.yml")["groups"] for rule in group["rules"]]


# --- promtool -------------------------------------------------------------------------------------


async def test_promtool_accepts_the_shipped_config_with_its_token_file(tmp_path: Path) -> None:
    """The config as shipped, its token file made to exist (copied beside alerts.yml, that one path
    rewritten): `promtool check config` also loads the rule files it names."""
    promtool = _tool("promtool")
    text = (DEPLOY / "prometheus.yml").read_text()
    assert text.count(SHIPPED_TOKEN_FILE) == 1, "the shipped config no longer names its token file"
    token = tmp_path / "admin-token"
    token.write_text(secrets.token_hex(32) + "\n")
    (tmp_path / "prometheus.yml").write_text(text.replace(SHIPPED_TOKEN_FILE, str(token)))
    shutil.copy(DEPLOY / "alerts.yml", tmp_path / "alerts.yml")
    with trio.fail_after(TEST_DEADLINE):
        code, said = await _run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert code == 0, said
    assert "SUCCESS: 1 rule files found" in said, said
    config = _load(tmp_path / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    assert job["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert job["metrics_path"] == "/metrics"


async def test_promtool_accepts_the_rules_each_with_for_severity_and_summary() -> None:
    promtool = _tool("promtool")
    rules = _rules()
    with trio.fail_after(TEST_DEADLINE):
        code, said = await _run(promtool, "check", "rules", "alerts.yml")
    assert code == 0, said
    assert f"SUCCESS: {len(rules)} rules found" in said, said
    assert len(rules) >= 8, "fewer alert rules than the issue asks for"
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: no for:"
        assert rule["labels"]["severity"] in SEVERITIES, f"{name}: severity {rule['labels']}"
        for annotation in ("summary", "description"):
            text = rule["annotations"].get(annotation, "")
            assert text and "\n" not in text, f"{name}: {annotation} is not one line"
        for metric in _metric_names(rule["expr"]):
            assert metric == "up" or metric.startswith("pipe_relay_"), f"{name}: {metric}?"


async def test_every_rule_fires_on_a_sick_series_and_not_on_a_healthy_one() -> None:
    """`promtool test rules` passes, and it tests each rule both ways: an eval_time that expects the
    alert (on the sick instance only) and one that expects none."""
    promtool = _tool("promtool")
    tests = _load(DEPLOY / "alerts_test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    for rule in _rules():
        name = rule["alert"]
        mine = [case.get("exp_alerts") or [] for case in cases if case["alertname"] == name]
        assert [] in mine, f"{name}: no eval_time where it must stay quiet"
        fired = [alert for alerts in mine for alert in alerts]
        assert fired, f"{name}: never made to fire"
        for alert in fired:
            assert alert["exp_labels"]["instance"].startswith("bad:"), f"{name} fires on a healthy one"
    with trio.fail_after(TEST_DEADLINE):
        code, said = await _run(promtool, "test", "rules", "alerts_test.yml")
    assert code == 0, said
    assert "SUCCESS" in said, said


async def test_a_rule_that_never_fires_fails_the_unit_tests(tmp_path: Path) -> None:
    """The check itself: alerts.yml with PipeRelayDown broken (`up == 2`) fails `promtool test rules`."""
    promtool = _tool("promtool")
    rules = (DEPLOY / "alerts.yml").read_text()
    broken = rules.replace('up{job="pipe-relay"} == 0', 'up{job="pipe-relay"} == 2')
    assert broken != rules
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(DEPLOY / "alerts_test.yml", tmp_path / "alerts_test.yml")
    with trio.fail_after(TEST_DEADLINE):
        code, said = await _run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert code != 0, said
    assert "alertname: PipeRelayDown" in said, said


# --- a real server, a real Prometheus ---------------------------------------------------------------


@dataclass
class Server:
    url: str
    admin_url: str
    token: str
    log: Path


@asynccontextmanager
async def _pipe_relay(workdir: Path) -> AsyncIterator[Server]:
    """`python -m pipe_relay` on free ports with its admin listener (`--admin-port 0`, a token file),
    as an operator starts it; its log (stderr) in `workdir`. Killed and reaped on exit."""
    token = secrets.token_hex(32)
    token_file = workdir / "admin-token"
    token_file.write_text(token + "\n")
    log = workdir / "pipe-relay.log"
    command = [
        *(sys.executable, "-m", "pipe_relay", "--host", "127.0.0.1", "--http-port", "0"),
        *("--admin-port", "0", "--admin-token-file", str(token_file)),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PIPE_RELAY_ADMIN_TOKEN", None)
    with log.open("wb") as err:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, env=env
        )
    try:
        try:
            lines = await startup_lines(process, 2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log: {log.read_text(errors='replace')}") from None
        urls = {("admin" in line): re.search(r"https?://\S+", line) for line in lines}
        assert urls.get(False) and urls.get(True), f"start-up lines: {lines}"
        yield Server(urls[False].group(), urls[True].group(), token, log)  # type: ignore[union-attr]
    finally:
        await _stop(process)


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


@dataclass
class Output:
    """What a process wrote on a pipe so far, read by a background task to its end."""

    data: bytearray
    changed: trio.Event
    ended: bool = False


async def _drain(stream: trio.abc.ReceiveStream, out: Output) -> None:
    async with stream:
        while chunk := await stream.receive_some(65536):
            out.data += chunk
            out.changed.set()
            out.changed = trio.Event()
    out.ended = True
    out.changed.set()


@dataclass
class Prometheus:
    url: str
    client: httpx.AsyncClient

    async def query(self, expr: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        answer = response.json()
        assert response.status_code == 200 and answer["status"] == "success", f"{expr}: {answer}"
        return list(answer["data"]["result"])

    async def value(self, expr: str) -> float | None:
        """The one value of an instant query, None while it has no result."""
        result = await self.query(expr)
        assert len(result) <= 1, f"{expr}: {result}"
        return float(result[0]["value"][1]) if result else None

    async def wait_for(self, expr: str, wanted: float) -> None:
        """Until `expr` reads `wanted` (a scrape a second: polled), else a failure that says what the
        scrapes' last errors were, within SCRAPE_DEADLINE."""
        found: float | None = None
        with trio.move_on_after(SCRAPE_DEADLINE):
            while True:
                if (found := await self.value(expr)) == wanted:
                    return
                await trio.sleep(0.1)
        targets = (await self.client.get(f"{self.url}/api/v1/targets")).json()["data"]["activeTargets"]
        errors = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        raise AssertionError(f"{expr} reads {found}, not {wanted}, after {SCRAPE_DEADLINE:g} s: {errors}")


def _scrape_config(server: Server, workdir: Path) -> Path:
    """deploy/prometheus.yml as shipped, but scraping every second, its target this server's admin
    listener with a token file holding its token; and a second job, alike but with a wrong token.
    alerts.yml beside it: the real Prometheus loads the shipped rules too."""
    config = _load(DEPLOY / "prometheus.yml")
    config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "pipe-relay"
    job["static_configs"] = [{"targets": [server.admin_url.removeprefix("http://")]}]
    job["authorization"]["credentials_file"] = str(workdir / "admin-token")
    wrong = json.loads(json.dumps(job))
    wrong["job_name"] = "pipe-relay-wrong-token"
    (workdir / "wrong-token").write_text(secrets.token_hex(32) + "\n")
    wrong["authorization"]["credentials_file"] = str(workdir / "wrong-token")
    config["scrape_configs"].append(wrong)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    shutil.copy(DEPLOY / "alerts.yml", workdir / "alerts.yml")
    return path


@asynccontextmanager
async def _prometheus(config: Path, workdir: Path) -> AsyncIterator[Prometheus]:
    """`prometheus` on a free loopback port, ready (its log says so) within PROMETHEUS_START."""
    port = free_port()
    command = [
        _tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=workdir
    )
    log = Output(bytearray(), trio.Event())
    async with trio.open_nursery() as nursery:
        assert process.stderr is not None
        nursery.start_soon(_drain, process.stderr, log)
        try:  # (the drain ends at the killed process's end of output: the nursery then closes)
            with trio.move_on_after(PROMETHEUS_START):
                while READY not in log.data and not log.ended:
                    await log.changed.wait()
            assert READY in log.data, f"Prometheus not ready in {PROMETHEUS_START:g} s:\n{log.data.decode()}"
            async with httpx.AsyncClient(timeout=5) as client:
                yield Prometheus(f"http://127.0.0.1:{port}", client)
        finally:
            await _stop(process)


async def test_prometheus_scrapes_a_real_server_after_a_real_transfer(tmp_path: Path) -> None:
    """A transfer with curl, then Prometheus' API: one transfer completed, its bytes sent, `up` 1 for
    the shipped job and 0 (a 401) for the same job with a wrong token; and every dashboard panel's
    query runs in this Prometheus, the throughput one reading bytes."""
    body = os.urandom(1 << 20)
    source = tmp_path / "body"
    source.write_bytes(body)
    with trio.fail_after(TEST_DEADLINE):
        async with _pipe_relay(tmp_path) as server:
            config = _scrape_config(server, tmp_path)
            async with _prometheus(config, tmp_path) as prometheus:
                # (a scrape before the transfer: the counters' rise is then seen by rate())
                await prometheus.wait_for('up{job="pipe-relay"}', 1)
                url = f"{server.url}/monitored-{secrets.token_hex(4)}"
                results: dict[str, CurlResult] = {}
                async with trio.open_nursery() as nursery:

                    async def party(name: str, *args: str) -> None:
                        results[name] = await curl(*args, max_time=20)

                    nursery.start_soon(party, "receiver", url)
                    nursery.start_soon(party, "sender", "-T", str(source), url)
                receiver, sender = results["receiver"], results["sender"]
                assert receiver.returncode == 0 and sender.returncode == 0, results
                assert hashlib.sha256(receiver.stdout).hexdigest() == hashlib.sha256(body).hexdigest()
                assert b"[INFO] Transfer complete." in sender.stdout, sender.stdout

                await prometheus.wait_for('pipe_relay_transfers_completed_total{job="pipe-relay"}', 1)
                assert await prometheus.value('pipe_relay_sent_bytes_total{job="pipe-relay"}') == len(body)
                assert await prometheus.value('pipe_relay_received_bytes_total{job="pipe-relay"}') == len(
                    body
                )
                assert await prometheus.value('up{job="pipe-relay"}') == 1
                await prometheus.wait_for('up{job="pipe-relay-wrong-token"}', 0)
                targets = (await prometheus.client.get(f"{prometheus.url}/api/v1/targets")).json()
                (wrong,) = [
                    t
                    for t in targets["data"]["activeTargets"]
                    if t["labels"]["job"] == "pipe-relay-wrong-token"
                ]
                assert "401" in wrong["lastError"], wrong

                for _, expr in _panel_queries(_dashboard()):
                    await prometheus.query(_as_promql(expr, window="1m"))
                (throughput,) = [expr for _, expr in _panel_queries(_dashboard()) if "received_bytes" in expr]
                assert (await prometheus.value(_as_promql(throughput, window="1m")) or 0) > 0


# --- the dashboard --------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_WORD = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


def _metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: every bare identifier that is not a function or
    aggregation (followed by `(`), a keyword, a label (inside `{}` or a grouping) or a Grafana variable."""
    text = _GROUPING.sub(" ", _RANGE.sub(" ", _MATCHERS.sub(" ", _STRING.sub(" ", expr))))
    names = set()
    for match in _WORD.finditer(text):
        if text[match.end() :].lstrip().startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_the_name_extraction_finds_a_misspelt_metric_and_no_label() -> None:
    """The check itself: a typo is a name of its own; labels, functions and variables are not names."""
    expr = (
        "histogram_quantile(0.95, sum by (le) (rate(pipe_relay_transfer_duraton_seconds_bucket"
        '{instance=~"$instance"}[$__rate_interval]))) '
        "/ on(job) group_left sum without(code) (pipe_relay_errors_total) > 1e-9"
    )
    assert _metric_names(expr) == {"pipe_relay_transfer_duraton_seconds_bucket", "pipe_relay_errors_total"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside a collapsed row too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def _panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]


def _as_promql(expr: str, window: str) -> str:
    """A panel's query with Grafana's variables given values, as Grafana sends it."""
    return expr.replace("$__rate_interval", window).replace("$instance", ".*")


async def test_the_dashboard_names_only_metrics_a_real_server_exposes(tmp_path: Path) -> None:
    """The dashboard is Grafana JSON on a ${DS_PROMETHEUS} input; every panel query parses (promtool,
    as recording rules) and reads only sample names that a real scrape of the server has, and the
    panels cover transfers, bytes, pipes, connections, errors, rejections, floods, histograms, workers."""
    promtool = _tool("promtool")
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dashboard)}) == len(_panels(dashboard)), "two panels share an id"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    queries = _panel_queries(dashboard)
    (variable,) = dashboard["templating"]["list"]
    used: dict[str, set[str]] = {}
    for title, expr in queries:
        used.setdefault(title, set()).update(_metric_names(expr))
    used["$instance"] = set(re.findall(r"label_values\((\w+),", variable["definition"]))
    assert used["$instance"], variable

    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"panel:{i}", "expr": _as_promql(expr, window="5m")} for i, (_, expr) in enumerate(queries)
    ]}]}  # fmt: skip
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))

    with trio.fail_after(TEST_DEADLINE):
        code, said = await _run(promtool, "check", "rules", "panels.yml", cwd=tmp_path)
        assert code == 0, said
        async with _pipe_relay(tmp_path) as server, httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{server.admin_url}/metrics", headers={"Authorization": f"Bearer {server.token}"}
            )
    assert response.status_code == 200, response.text
    exposed = {s.name for f in text_string_to_metric_families(response.text) for s in f.samples}
    unknown = {f"{title}: {name}" for title, names in used.items() for name in names - exposed}
    assert not unknown, f"not in a real scrape: {sorted(unknown)}"
    missing = DASHBOARD_FAMILIES - set().union(*used.values())
    assert not missing, f"no panel shows {sorted(missing)}"
