# Soak run: randomized transfers over a buffer and a splice server, some parties killed at random moments.
# Invariant: bounded (count, concurrency, --seconds, deadlines per transfer); a cut body never looks whole.
"""Usage:

    .venv/bin/python loadtests/soak.py --transfers 1000 --seed 1

Starts two servers of this checkout (`--engine buffer` and `--engine splice`) on loopback and runs
N transfers (8 at a time) spread over both: sizes 0 B to 64 MiB (log-uniform), n 1-4, parties in a
random order, senders raw (Content-Length or chunked) or curl (`-T file`, `-T -`), receivers raw or
curl. A fraction of the parties is killed (raw: FIN or RST; curl: SIGKILL) while waiting or at a
random point of the body; a party killed while waiting is replaced after 50 ms. Every received byte
is compared with the one sent. It prints, per receiver,

    completed / aborted / corrupted / false-complete / lost

corrupted: a clean-looking complete body with wrong bytes; false-complete: a clean-looking complete
body although no sender of the transfer handed over its whole body; lost: a receiver of a transfer
in which no party was killed that did not complete. Then the end check: for every path used, the
server's `?progress` says `idle` (its registry holds nothing there) and a fresh transfer works; the
health endpoint says ok; the server's open descriptors are back to their count before the run; its
log has no internal error. Exit 1 if any of this fails or any of the three counts is not zero.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.harness import start_server, stop
from loadtests.soak_check import end_check, fd_count, fresh_transfer
from loadtests.soak_parties import Kill, Outcome, Party, Target, run_party
from loadtests.soak_wire import Pattern

MIB = 1 << 20
SENDER_KINDS = ("raw-length", "raw-chunked", "curl-file", "curl-chunked")
CURL_FILE_MAX = 16 * MIB  # larger curl -T file bodies go as raw Content-Length (no big temp files)
CANCELLED = "cancelled: stuck"
ORPHAN_GRACE = 3.0
"""A transfer whose parties all wait, with none to come, this long is stuck (a kill lost a race)."""


@dataclass
class Plan:
    index: int
    server: int
    n: int
    size: int
    shift: int
    sender: Party
    receivers: list[Party]

    @property
    def path(self) -> str:
        return f"/soak-{self.index}"

    @property
    def parties(self) -> list[Party]:
        return [self.sender, *self.receivers]


@dataclass
class Result:
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    stuck: bool = False
    timed_out: bool = False


def _kill(rng: random.Random, kind: str, fraction: float) -> Kill | None:
    if rng.random() >= fraction:
        return None
    how = "sigkill" if kind.startswith("curl") else rng.choice(("fin", "rst"))
    if rng.random() < 0.4:
        return Kill("waiting", how, rng.uniform(0.0, 0.05))
    return Kill("streaming", how, rng.choice((0.0, 1.0)) if rng.random() < 0.2 else rng.random())


def make_plans(count: int, seed: int, kill_fraction: float, max_size: int, servers: int = 2) -> list[Plan]:
    """The whole run, decided up front from `seed`."""
    rng = random.Random(seed)
    plans = []
    for index in range(count):
        size = int(math.exp(rng.uniform(0.0, math.log(max_size + 1)))) - 1
        n = rng.randint(1, 4)
        kind = rng.choice(SENDER_KINDS)
        if kind == "curl-file" and size > CURL_FILE_MAX:
            kind = "raw-length"
        sender = Party("sender", kind, 0.0, _kill(rng, kind, kill_fraction), eager=rng.random() < 0.5)
        if sender.kill and sender.kill.when == "waiting" and sender.kind.startswith("raw") and sender.eager:
            sender.kill.how = "rst"  # its FIN may wait behind a full window: see loadtests/README.md
        receivers = []
        for _ in range(n):
            receiver_kind = "curl" if rng.random() < 0.3 else "raw"
            receivers.append(Party("receiver", receiver_kind, 0.0, _kill(rng, receiver_kind, kill_fraction)))
        parties = [sender, *receivers]
        rng.shuffle(parties)
        at = 0.0
        for party in parties:
            party.delay = at
            at += rng.uniform(0.0, 0.02)
        plans.append(Plan(index, index % servers, n, size, rng.randrange(1 << 30), sender, receivers))
    return plans


async def run_transfer(plan: Plan, target: Target) -> Result:
    """All parties of one transfer (and replacements of those killed while waiting), to their ends."""
    result = Result(plan)
    arriving = [len(plan.parties)]

    async def party_task(party: Party) -> None:
        await trio.sleep(party.delay)
        while True:
            out = Outcome(party)
            result.outcomes.append(out)
            arriving[0] -= 1
            await run_party(target, out)
            if out.killed != "waiting":
                return
            arriving[0] += 1
            await trio.sleep(0.05)
            party = Party(
                party.role, "raw-length" if party.role == "sender" else "raw", 0.0, replacement=True
            )
            if party.role == "sender" and plan.sender.kind.endswith("chunked"):
                party.kind = "raw-chunked"

    async def watchdog(cancel: trio.CancelScope) -> None:
        stuck_since = None
        while True:
            await trio.sleep(0.1)
            running = [o for o in result.outcomes if not o.done]
            if arriving[0] == 0 and running and not any(o.meeting for o in running):
                stuck_since = stuck_since or trio.current_time()
                if trio.current_time() - stuck_since > ORPHAN_GRACE:
                    result.stuck = True
                    for out in running:
                        out.note = CANCELLED
                    cancel.cancel()
                    return
            else:
                stuck_since = None

    deadline = 60 + plan.size / 5e6 * plan.n
    with trio.move_on_after(deadline) as scope:
        async with trio.open_nursery() as nursery:
            inner = trio.CancelScope()
            with inner:
                async with trio.open_nursery() as parties:
                    for party in plan.parties:
                        parties.start_soon(party_task, party)
                    nursery.start_soon(watchdog, parties.cancel_scope)
            nursery.cancel_scope.cancel()
    result.timed_out = scope.cancelled_caught
    return result


def summarize(results: list[Result]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for result in results:
        senders = [o for o in result.outcomes if o.party.role == "sender"]
        killed = any(o.killed for o in result.outcomes)
        counts["transfers"] += 1
        counts["transfers with a kill" if killed else "transfers without a kill"] += 1
        counts["stuck (cancelled)"] += result.stuck
        counts["timed out"] += result.timed_out
        for out in result.outcomes:
            if out.note == CANCELLED:
                counts["cancelled (stuck)"] += 1
                continue
            if out.killed:
                counts[f"killed {out.killed} ({out.party.kill.how if out.party.kill else '?'})"] += 1
                continue
            if out.party.replacement:
                counts["replacements"] += 1
            if out.party.role == "sender":
                if not killed and not out.clean:
                    counts["senders lost"] += 1
                continue
            verdict = receiver_verdict(senders, out)
            counts[verdict] += 1
            counts["lost"] += verdict == "aborted" and not killed
    return counts


def receiver_verdict(senders: list[Outcome], out: Outcome) -> str:
    """completed, aborted, corrupted or false-complete (a clean end though no sender finished)."""
    if not out.clean:
        return "aborted"
    if all(o.finished is False for o in senders):
        return "false-complete"
    return "completed" if out.correct else "corrupted"


async def soak(
    transfers: int = 1000,
    *,
    seed: int = 1,
    kill_fraction: float = 0.2,
    concurrency: int = 8,
    seconds: float = 1800.0,
    max_size: int = 64 * MIB,
    verbose: bool = False,
) -> tuple[Counter[str], list[str]]:
    """The whole run against two fresh servers (buffer, splice): counts and end-check problems."""
    plans = make_plans(transfers, seed, kill_fraction, max_size)
    pattern = Pattern(seed)
    with tempfile.TemporaryDirectory(prefix="pipe-relay-soak-") as tmp:
        workdir = Path(tmp)
        servers = []
        try:
            for engine in ("buffer", "splice"):
                with (workdir / f"{engine}.log").open("wb") as log:
                    process, port = await trio.to_thread.run_sync(
                        start_server, engine, ["--log-level", "info"], log
                    )
                servers.append((process, port, workdir / f"{engine}.log"))
            for _, port, _ in servers:  # a first transfer: what the server opens once is in the baseline
                assert await fresh_transfer(port, "/soak-warm-up")
            fds = [fd_count(process.pid) for process, _, _ in servers]
            results: list[Result] = []
            stop_at = trio.current_time() + seconds
            queue = iter(plans)

            async def worker() -> None:
                for plan in queue:
                    if trio.current_time() >= stop_at:
                        return
                    target = Target(
                        servers[plan.server][1],
                        plan.path,
                        plan.n,
                        plan.size,
                        plan.shift,
                        pattern,
                        workdir,
                        120,
                    )
                    results.append(await run_transfer(plan, target))
                    if verbose:
                        _show(results[-1])

            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
            problems = []
            for index, (process, port, log_path) in enumerate(servers):
                paths = [r.plan.path for r in results if r.plan.server == index]
                for problem in await end_check(port, process.pid, paths, fds[index], log_path):
                    problems.append(f"{log_path.stem} server: {problem}")
        finally:
            for process, _, _ in servers:
                stop(process)
                if process.stdout is not None:
                    process.stdout.close()
    return summarize(results), problems


def _show(result: Result) -> None:
    plan = result.plan
    senders = [o for o in result.outcomes if o.party.role == "sender"]
    parts = [
        f"{receiver_verdict(senders, o).upper() + ' ' if o.party.role == 'receiver' else ''}"
        f"{o.party.role[0]}:{o.party.kind}{'+' if o.party.replacement else ''}"
        f"{'/killed-' + o.killed if o.killed else ''}{' clean' if o.clean else ''}"
        f"{' ok' if o.correct else ''} {o.bytes}"
        f"{' fin=' + str(o.finished) if o.party.role == 'sender' else ''}"
        f"{' ' + o.note if o.note else ''}"
        for o in result.outcomes
    ]
    flags = (" STUCK" if result.stuck else "") + (" TIMEOUT" if result.timed_out else "")
    print(
        f"#{plan.index} srv{plan.server} n={plan.n} size={plan.size}{flags}: " + "; ".join(parts), flush=True
    )


def report(counts: Counter[str], problems: list[str], seconds: float) -> int:
    main_line = " / ".join(
        f"{counts[k]} {k}" for k in ("completed", "aborted", "corrupted", "false-complete", "lost")
    )
    print(f"soak: receivers {main_line}")
    print("soak: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in main_line))
    verdict = "; ".join(problems) or "every path free, health ok, descriptors back, no internal error"
    print(f"soak: {seconds:.0f} s; end check: {verdict}")
    bad = counts["corrupted"] + counts["false-complete"] + counts["lost"] + counts["senders lost"]
    return 1 if bad or problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transfers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill", type=float, default=0.2, help="fraction of parties killed")
    parser.add_argument("--concurrency", type=int, default=8, help="transfers at a time")
    parser.add_argument("--seconds", type=float, default=1800.0, help="no new transfer after this")
    parser.add_argument("--max-size", type=int, default=64 * MIB, help="largest body, bytes")
    parser.add_argument("--verbose", action="store_true", help="one line per transfer")
    args = parser.parse_args()
    started = time.monotonic()
    counts, problems = trio.run(
        lambda: soak(
            args.transfers,
            seed=args.seed,
            kill_fraction=args.kill,
            concurrency=args.concurrency,
            seconds=args.seconds,
            max_size=args.max_size,
            verbose=args.verbose,
        )
    )
    return report(counts, problems, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
