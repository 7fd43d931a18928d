"""The chaos driver: run one scenario to the end, killing the flow process along the way, then check it.

The emulator lives in this (the parent) process and appends its journal to a file, so the record of what
the gateway accepted outlives every child. Each child runs the same campaign (`tests.chaos.runner`). While it
runs, the driver watches the emulator's batch calls and acts at seeded points:

- **kill** (SIGKILL, one per child until `spec.kills` are spent), at one of three kinds of point:
  `early` (a random time after start: loading, validating, planning or the first calls), `after_calls`
  (a random delay after the k-th batch call was answered: recording it, marking the next batch, pacing, or
  mid-request), `in_flight` (while the gateway holds a batch it has already accepted: the window between the
  gateway's acceptance and the ledger's write, which leaves `unknown` rows with a delivered message);
- **business fault**: one scripted business error (`AMOUNT_NOT_ENOUGH`, reopened by the next run as after a
  top-up, or `INVALID_PARAMETERS`, final), which stops the run (`CampaignFailed`);
- **slow accept**: one scripted `timeout_after_accept` longer than the read timeout (accepted; the client
  times out).

On top of these the emulator draws its random faults (HTTP 500, spurious throttling, accept-then-drop,
latency) under the scenario's seed. Children are rerun until one completes with nothing left pending.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alibaba_sms.emulator import EmulatorConfig, EmulatorServer
from globe_sms.ledger import Ledger
from tests.chaos.check import Verdict, check, journal_requests
from tests.chaos.runner import EXIT_COMPLETED, EXIT_CRASHED, EXIT_STOPPED
from tests.chaos.scenario import FINAL_CODE, REOPENED_CODE, ChaosSpec, make_campaign, write_recipients

BATCH = "BatchSendMessageToGlobe"
SINGLE = "SendMessageToGlobe"
LANE_ACTIONS = {"batch": (BATCH,), "single": (SINGLE,), "both": (BATCH, SINGLE)}
"""The calls each `send_via` makes: the ones the driver counts, scripts faults into and kills after."""
REPO = Path(__file__).resolve().parents[2]
POLL_SECONDS = 0.003
CHILD_TIMEOUT_SECONDS = 120.0
IN_FLIGHT_HOLD = "timeout_after_accept:30"  # held until the killed client's connection closes
SLOW_ACCEPT = "timeout_after_accept:3"  # longer than the campaign's read timeout
KILL_WEIGHTS = {"early": 0.2, "after_calls": 0.45, "in_flight": 0.35}
CHILD_ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",  # the emulator's test key, not a secret
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


class Child(Protocol):
    pid: int | None

    def poll(self) -> int | None: ...
    def kill(self) -> None: ...
    def wait(self) -> int: ...


class _ForkedChild:
    """A `multiprocessing.Process` seen through the `subprocess.Popen` methods the driver uses."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def kill(self) -> None:
        self._process.kill()  # SIGKILL

    def wait(self) -> int:
        self._process.join()
        return int(self._process.exitcode or 0)


class Launcher(Protocol):
    mode: str
    startup_seconds: float

    def start(self, campaign_file: Path, api_url: str, log_file: Path) -> Child: ...


class ForkLauncher:
    """Children forked from a forkserver that imported the flow once: a child starts in milliseconds."""

    mode = "fork"
    startup_seconds = 0.0

    def __init__(self) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["tests.chaos.runner"])

    def start(self, campaign_file: Path, api_url: str, log_file: Path) -> Child:
        from tests.chaos.runner import child_main

        process = self._context.Process(
            target=child_main, args=(str(campaign_file), api_url, CHILD_ENV, str(log_file)), daemon=True
        )
        process.start()
        return _ForkedChild(process)


class ExecLauncher:
    """Children started cold, `python -m tests.chaos.runner CAMPAIGN.json`: what a user's process does."""

    mode = "exec"
    startup_seconds = 3.5  # importing Prefect, polars and pandera

    def start(self, campaign_file: Path, api_url: str, log_file: Path) -> Child:
        env = {**os.environ, **CHILD_ENV, "PREFECT_API_URL": api_url}
        with log_file.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.runner", str(campaign_file)],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


@dataclass
class KillPlan:
    """Where to kill one child."""

    kind: str  # early | after_calls | in_flight
    calls: int = 0
    delay: float = 0.0


@dataclass
class ChildRun:
    """What one child did."""

    index: int
    mode: str
    exit_code: int | None
    killed: bool
    kill_kind: str | None
    batch_calls: int
    seconds: float
    scripted: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    """A scenario's runs, the faults the gateway injected, and the verdict of the check."""

    spec: ChaosSpec
    runs: list[ChildRun]
    verdict: Verdict
    faults: dict[str, int]
    batch_calls: int
    done: bool
    seconds: float
    journal_path: Path
    ledger_url: str
    expected: set[str]
    logs: list[Path]

    @property
    def kills(self) -> int:
        return sum(run.killed for run in self.runs)

    @property
    def crashes(self) -> int:
        return sum(run.exit_code == EXIT_CRASHED for run in self.runs)

    @property
    def ok(self) -> bool:
        return self.done and self.verdict.ok

    def figures(self) -> dict[str, Any]:
        """Everything a report needs, with no phone number in it."""
        return {
            "seed": self.spec.seed,
            "send_via": self.spec.send_via,
            "done": self.done,
            "ok": self.ok,
            "child_runs": len(self.runs),
            "kills": self.kills,
            "kills_by_kind": dict(Counter(run.kill_kind for run in self.runs if run.killed)),
            "stopped_runs": sum(run.exit_code == EXIT_STOPPED for run in self.runs),
            "crashed_runs": self.crashes,
            "batch_calls": self.batch_calls,
            "faults": self.faults,
            "seconds": round(self.seconds, 1),
            **self.verdict.figures(),
            "problems": self.verdict.problems(),
        }

    def crash_logs(self, tail: int = 3000) -> str:
        """The end of each crashed child's log, for a failure message."""
        parts = []
        for run, log in zip(self.runs, self.logs, strict=True):
            if run.exit_code == EXIT_CRASHED:
                parts.append(f"--- child {run.index} ---\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


FAULT_NAMES = {IN_FLIGHT_HOLD: "in_flight_hold", SLOW_ACCEPT: "slow_accept"}
NOT_FAULTS = ("in_flight_hold", "flow_control_throttle")  # a kill's hold; the emulator's own rate check


def fault_counts(journal_path: Path, campaign_id: str, actions: tuple[str, ...] = (BATCH,)) -> dict[str, int]:
    """Faults the gateway injected into the campaign's calls, by kind, plus in-flight holds (where a kill
    struck) and flow-control throttles (calls the emulator found too close to the previous one)."""
    counts: Counter[str] = Counter()
    for request in journal_requests(journal_path):
        if request["action"] not in actions or not str(request.get("task_id") or "").startswith(
            f"{campaign_id}-b"
        ):
            continue
        fault = request.get("fault")
        if fault:
            counts[FAULT_NAMES.get(fault, str(fault).split(":")[0])] += 1
        elif request["code"].startswith("Throttling"):
            counts["flow_control_throttle"] += 1
    return dict(sorted(counts.items()))


class ScenarioDriver:
    """Runs one `ChaosSpec` in `workdir` against the Prefect API at `api_url`.

    Args:
        spec: the scenario.
        workdir: an empty folder for the recipients, ledger, journal, campaign file and child logs.
        api_url: the Prefect server the children use (the same one every time, as in production).
        launcher: how children start (`ForkLauncher` by default).
    """

    def __init__(
        self, spec: ChaosSpec, workdir: Path, api_url: str, launcher: Launcher | None = None
    ) -> None:
        self.spec = spec
        self.workdir = workdir
        self.api_url = api_url
        self.launcher = launcher or ForkLauncher()
        self.rng = random.Random(f"driver:{spec.seed}")
        self.journal_path = workdir / "journal.jsonl"
        self.ledger_url = f"sqlite:///{workdir / 'ledger.db'}"
        self.expected = write_recipients(workdir / "recipients.csv", spec)
        self.emulator: EmulatorServer | None = None
        self.campaign_file = workdir / "campaign.json"
        self.runs: list[ChildRun] = []
        self.logs: list[Path] = []

    def __enter__(self) -> ScenarioDriver:
        config = EmulatorConfig(
            batch_calls_per_second=self.spec.rate,
            single_calls_per_second=self.spec.single_rate,
            faults=self.spec.faults(),
            seed=self.spec.seed,
            journal_path=self.journal_path,
        )
        self.emulator = EmulatorServer(config).start()
        campaign = make_campaign(
            self.spec, self.workdir / "recipients.csv", self.ledger_url, self.emulator.url,
            f"chaos-{self.spec.seed}-{os.getpid()}",
        )
        self.campaign = campaign
        self.campaign_file.write_text(campaign.model_dump_json(), encoding="utf-8")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.emulator is not None:
            self.emulator.stop()

    # -- one scenario ------------------------------------------------------------------------------

    def run(self) -> ScenarioResult:
        """Run children (killing the first `spec.kills`) until the campaign is done, then check it."""
        started = time.monotonic()
        kills_left = self.spec.kills
        done = False
        for index in range(self.spec.max_runs):
            remaining = self._remaining_batches()
            kill = self._plan_kill(remaining) if kills_left else None
            run = self._run_child(index, kill, remaining)
            self.runs.append(run)
            kills_left -= run.killed
            if run.exit_code == EXIT_COMPLETED and self._settled():
                done = True
                break
        verdict = check(self.journal_path, self.ledger_url, self.spec.campaign_id, self.expected)
        return ScenarioResult(
            spec=self.spec,
            runs=self.runs,
            verdict=verdict,
            faults=fault_counts(self.journal_path, self.spec.campaign_id, self.actions),
            batch_calls=len(self._batch_requests()),
            done=done,
            seconds=time.monotonic() - started,
            journal_path=self.journal_path,
            ledger_url=self.ledger_url,
            expected=self.expected,
            logs=self.logs,
        )

    @property
    def actions(self) -> tuple[str, ...]:
        return LANE_ACTIONS[self.spec.send_via]

    @property
    def single_faults(self) -> bool:
        """Whether scripted faults go to single calls (the single lane, and `both`) or batch calls."""
        return self.spec.send_via != "batch"

    def _batch_requests(self) -> list[Any]:
        """The campaign's calls of its lane(s), in the order answered."""
        assert self.emulator is not None
        return [r for r in self.emulator.state.requests() if r.action in self.actions]

    def _counts(self) -> dict[str, int]:
        with Ledger(self.ledger_url) as ledger:
            counts = ledger.counts(self.spec.campaign_id)
            rows = ledger.rows(self.spec.campaign_id)
        counts["reopenable"] = rows.filter(
            (rows["status"] == "failed") & (rows["error_code"] == REOPENED_CODE)
        ).height if rows.height else 0
        return counts

    def _remaining_batches(self) -> int:
        """Batches the next run will plan (about: what is pending or will be reopened)."""
        counts = self._counts()
        # recipients per call: the batch lane's batch size, 1 for single calls, and with both lanes at once
        # (most recipients go one per call) 2, so that a kill point drawn from it is always reached
        per_call = {"batch": self.spec.batch_size, "single": 1, "both": 2}[self.spec.send_via]
        if sum(counts[s] for s in ("pending", "submitting", "accepted", "failed", "unknown")) == 0:
            return math.ceil(len(self.expected) / per_call)
        return math.ceil((counts["pending"] + counts["reopenable"]) / per_call)

    def _settled(self) -> bool:
        counts = self._counts()
        return counts["pending"] == 0 and counts["submitting"] == 0 and counts["reopenable"] == 0

    def _plan_kill(self, remaining: int) -> KillPlan:
        kinds = list(self.spec.kill_kinds)
        kind = self.rng.choices(kinds, weights=[KILL_WEIGHTS[k] for k in kinds])[0]
        if kind == "early" or remaining == 0:
            return KillPlan("early", delay=self.launcher.startup_seconds + self.rng.uniform(0.0, 1.5))
        if kind == "after_calls":
            calls = self.rng.randint(1, remaining)
        else:
            calls = self.rng.randint(0, remaining - 1)
        return KillPlan(kind, calls=calls, delay=self.rng.uniform(0.0, 1.5 / self.spec.rate))

    def _plan_scripts(self, remaining: int) -> list[tuple[int, str]]:
        """(after how many of this child's calls, the fault to script for the next call)."""
        scripts = []
        if remaining and self.rng.random() < self.spec.business_fault_rate:
            code = self.rng.choice([REOPENED_CODE, FINAL_CODE])
            scripts.append((self.rng.randint(0, remaining - 1), f"business:{code}"))
        if remaining and self.rng.random() < self.spec.slow_accept_rate:
            scripts.append((self.rng.randint(0, remaining - 1), SLOW_ACCEPT))
        return sorted(scripts)

    def _run_child(self, index: int, kill: KillPlan | None, remaining: int) -> ChildRun:
        assert self.emulator is not None
        faults = self.emulator.state.faults
        single = self.single_faults
        faults.script([], replace=True)
        faults.script([], replace=True, single=True)
        scripted: list[str] = []
        if kill is not None and kill.kind == "in_flight":
            # Queued before the child starts, so no call can slip past it: its (calls + 1)-th call is held.
            faults.script(["ok"] * kill.calls + [IN_FLIGHT_HOLD], single=single)
            scripted.append(IN_FLIGHT_HOLD)
            scripts = []
        else:
            scripts = self._plan_scripts(remaining)
        base = len(self._batch_requests())
        log = self.workdir / f"child-{index:02d}.log"
        self.logs.append(log)
        child = self.launcher.start(self.campaign_file, self.api_url, log)
        started = time.monotonic()
        killed = hung = False
        kill_at: float | None = None
        while child.poll() is None:
            now = time.monotonic()
            requests = self._batch_requests()[base:]
            calls = len(requests)
            while scripts and scripts[0][0] <= calls:
                entry = scripts.pop(0)[1]
                faults.script([entry], single=single)
                scripted.append(entry)
            if kill is not None:
                if kill.kind == "early" and now - started >= kill.delay:
                    kill_at = now
                elif kill.kind == "after_calls" and kill_at is None and calls >= kill.calls:
                    kill_at = now + kill.delay
                elif kill.kind == "in_flight" and any(r.fault == IN_FLIGHT_HOLD for r in requests):
                    kill_at = now
                if kill_at is not None and now >= kill_at:
                    child.kill()
                    killed = True
                    break
            if now - started > CHILD_TIMEOUT_SECONDS:
                child.kill()
                hung = True
                break
            time.sleep(POLL_SECONDS)
        code = child.wait()
        if hung:  # a child that never finished counts as crashed, with a note in its log
            with log.open("a", encoding="utf-8") as handle:
                handle.write(f"\n[driver] no exit after {CHILD_TIMEOUT_SECONDS:g} s: killed\n")
            code = EXIT_CRASHED
        faults.script([], replace=True)
        faults.script([], replace=True, single=True)
        return ChildRun(
            index=index,
            mode=self.launcher.mode,
            exit_code=None if killed else code,
            killed=killed,
            kill_kind=kill.kind if killed and kill else None,
            batch_calls=len(self._batch_requests()) - base,
            seconds=time.monotonic() - started,
            scripted=scripted,
        )


def run_scenario(
    spec: ChaosSpec, workdir: Path, api_url: str, launcher: Launcher | None = None
) -> ScenarioResult:
    """Run one scenario with its own emulator and journal; see the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    with ScenarioDriver(spec, workdir, api_url, launcher) as driver:
        return driver.run()


def result_json(result: ScenarioResult) -> dict[str, Any]:
    """A scenario's figures plus its spec and runs (JSON-ready)."""
    return {
        **result.figures(),
        "spec": asdict(result.spec),
        "runs": [asdict(run) for run in result.runs],
    }
