"""The chaos harness: campaigns against the fault-injecting emulator, with the flow process SIGKILLed mid-run.

- `scenario`: a seeded scenario (recipients, fault rates, kills) and the campaign it sends;
- `runner`: the child that runs one campaign (`python -m tests.chaos.runner CAMPAIGN.json`, or forked);
- `driver`: the parent: emulator with its journal file, children, kill points, reruns until done;
- `check`: the invariants, from the emulator's journal file and the ledger.

Used by `tests/{unit,integration}/test_chaos.py` (the short CI form) and `bench/chaos.py` (the full form with
figures).
"""
