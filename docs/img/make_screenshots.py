"""Make the screenshots of docs/deployments.md from a real run: a Prefect server with its UI,
`globe-sms setup`, `prefect deploy`, one process worker, a run of the `send-campaign` deployment against the
emulator (with one dropped answer, so that the run has unknown recipients to show), then headless Chromium on
the flow run page and on two of its artifacts (the per-batch table and the summary).

    apt-get install -y chromium      # once; CI never runs this script: the PNGs are committed
    uv run python docs/img/make_screenshots.py

Everything runs on loopback in a temporary PREFECT_HOME and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tests.test_workers import PrefectStack, free_port  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=15000",
]


def screenshot(url: str, path: Path, profile: Path) -> None:
    """One page, rendered by headless Chromium with a fresh profile."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
        check=True, capture_output=True, timeout=120,
    )
    print(f"wrote {path.relative_to(ROOT)}")  # noqa: T201 - a script's output


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="globe-sms-shots-") as tmp:
        folder = Path(tmp)
        stack = PrefectStack(folder / "prefect")
        emulator_port = free_port()
        try:
            stack.start_server(ui=True)
            emulator = stack.spawn(
                "emulator", sys.executable, "-m", "globe_sms.cli", "emulator", "--port", str(emulator_port)
            )
            emulator_url = f"http://127.0.0.1:{emulator_port}"
            for _ in range(100):
                try:
                    httpx.get(f"{emulator_url}/_emulator/health", timeout=1)
                    break
                except httpx.HTTPError:
                    assert emulator.poll() is None, stack.log("emulator")
                    time.sleep(0.1)
            # The third batch's answer is lost after the gateway accepted it: its recipients become unknown.
            httpx.post(f"{emulator_url}/_emulator/faults", json={"script": ["ok", "ok", "drop_after_accept"]})
            stack.run(sys.executable, "-m", "globe_sms.cli", "setup")
            stack.run(sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all")
            stack.start_worker("worker")
            campaign = {
                "campaign_id": "welcome-2026-11",
                "source": {"kind": "csv", "path": "examples/welcome.csv"},
                "template": {
                    "select_by": "lang", "fallback": "en",
                    "text": {"en": "Hi {first_name|there}, welcome to Globe! Your code is {code}.",
                             "zh": "{first_name|您好}，歡迎加入 Globe！驗證碼：{code}"},
                },
                "sender_id": "GlobeSMS", "validity_period": 3600, "batch_size": 500,
                "ledger": f"sqlite:///{folder / 'ledger.db'}",
                "price_table": "examples/prices.csv",
                "validation": {"max_reject_share": 0.05},
                "gateway": {"endpoint": emulator_url, "calls_per_second": 1.0},
            }
            out = stack.run(
                sys.executable, "-m", "prefect", "deployment", "run", "send-campaign/send-campaign",
                "--params", json.dumps({"campaign": campaign}), "--watch", timeout=300,
            )
            flow_run_id = next(line.split()[-1] for line in out.splitlines() if "UUID" in line)
            ui = stack.api_url.removesuffix("/api")
            screenshot(f"{ui}/runs/flow-run/{flow_run_id}", OUT / "flow-run.png", folder / "chrome-1")
            # The run page opens on its logs (its Artifacts tab cannot be opened by URL): artifact pages.
            shots = (("welcome-2026-11-batches", "artifacts.png"), ("welcome-2026-11-summary", "summary.png"))
            for key, name in shots:
                found = httpx.post(
                    f"{stack.api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}
                ).json()
                screenshot(f"{ui}/artifacts/artifact/{found[0]['id']}", OUT / name, folder / f"chrome-{name}")
        finally:
            stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
