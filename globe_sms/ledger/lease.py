"""The campaign run lease: one run at a time changes a campaign's rows, so none recovers another's batch.

`recover_interrupted` turns every `submitting` row of a campaign into `unknown`: right after a crash, but
wrong while another run of the campaign has a batch in flight. So a run takes the campaign's lease before
it touches the rows, and gives it back when it ends::

    acquire ──► recover_interrupted, register, mark_submitting ... (each fenced write renews it) ──► release
       └──► CampaignBusy: another run holds it; nothing was changed

The lease is one row of `campaign_runs` per campaign. `acquire` is one conditional upsert, so of two runs
asking at the same instant exactly one wins, on SQLite (writes are serialised) and on PostgreSQL
(`INSERT ... ON CONFLICT DO UPDATE ... WHERE`, which locks the row). It wins when there is no row, when the
row's lease has expired, or when the row's owner is the caller's: a Retry from the Prefect UI runs the same
flow run again, with the same id, and gets the lease back. A crashed run (SIGKILL) cannot give its lease
back; it expires by itself after `gateway.run_lease_seconds`, or at once when the crashed process ran on
this machine (same boot, same PID namespace) and is gone.

The ledger that acquired a lease remembers it and fences the two writes that must not race with another
run, `recover_interrupted` and `mark_submitting`: in their own transaction they check that the lease is still
this run's and extend it, so a run renews its lease at every batch attempt, right before the request
leaves; if the lease was taken over they raise `RunLeaseLost` and change nothing. A ledger holding no lease
for the campaign may make these writes only while no other run holds one (else `CampaignBusy`).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from globe_sms.ledger.errors import CampaignBusy, LedgerError, RunLeaseLost
from globe_sms.ledger.schema import campaign_runs

_r = campaign_runs.c


def pid_scope() -> str | None:
    """Where this process's pid means something: `<boot id>/<PID namespace>` on Linux, None elsewhere."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot_id}/{namespace}"


def process_gone(pid: int) -> bool:
    """True only when no process `pid` exists (a zombie, or one of another user, still counts as there)."""
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, existence is checked (only called where pid_scope works)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


@dataclass(frozen=True)
class RunOwner:
    """Who asks for a campaign's run lease.

    Attributes:
        id: the Prefect flow run id (a UI Retry keeps it, and so gets the lease back), else a uuid4.
        description: for people, in `CampaignBusy`: flow run name and id, host, pid. No secret, no number.
        pid: this process.
        pid_scope: see `pid_scope()`: lets a later run on this machine see that this process is gone.
    """

    id: str
    description: str
    pid: int
    pid_scope: str | None

    @classmethod
    def this_process(cls, run_id: str | None = None, run_label: str | None = None) -> RunOwner:
        """This process as an owner.

        Args:
            run_id: an id that stays the same when the run is retried (the flow run id); None: a uuid4.
            run_label: what the run is, e.g. `flow run 'weekly-news-2026-05-04' (<id>)`.
        """
        pid = os.getpid()
        label = run_label or "a globe-sms process"
        described = f"{label} on host {socket.gethostname()}, pid {pid}"
        return cls(run_id or str(uuid.uuid4()), described, pid, pid_scope())


@dataclass(frozen=True)
class RunLease:
    """A campaign's `campaign_runs` row: who holds its run lease, and until when."""

    campaign_id: str
    owner: str
    description: str
    token: str
    pid: int
    pid_scope: str | None
    acquired_at: datetime
    expires_at: datetime

    def abandoned(self) -> bool:
        """Its holder ran in this machine's PID namespace and that process is gone (SIGKILL, OOM kill)."""
        return self.pid_scope is not None and self.pid_scope == pid_scope() and process_gone(self.pid)

    def blocks(self, now: datetime) -> bool:
        """Another run holds it: not expired, and its holder is not known to be gone."""
        return self.expires_at > now and not self.abandoned()

    def busy(self) -> CampaignBusy:
        """The error for a run that finds this lease in its way."""
        return CampaignBusy(self.campaign_id, self.description, self.acquired_at, self.expires_at)


@dataclass(frozen=True)
class HeldLease:
    """What a ledger remembers of a lease it acquired: its token, and how long a renewal lasts."""

    token: str
    ttl: float


def current(conn: Connection, campaign_id: str) -> RunLease | None:
    """The campaign's lease row, expired or not; None when nobody holds it."""
    row = conn.execute(select(campaign_runs).where(_r.campaign_id == campaign_id)).mappings().first()
    if row is None:
        return None
    return RunLease(
        campaign_id=row["campaign_id"],
        owner=row["owner"],
        description=row["owner_description"],
        token=row["token"],
        pid=row["pid"],
        pid_scope=row["pid_scope"],
        acquired_at=row["acquired_at"],
        expires_at=row["expires_at"],
    )


def acquire(
    conn: Connection,
    dialect: str,
    campaign_id: str,
    owner: RunOwner,
    token: str,
    now: datetime,
    until: datetime,
) -> RunLease:
    """Take the lease in one conditional upsert, or take over an abandoned one; else raise `CampaignBusy`."""
    values = {
        "owner": owner.id,
        "owner_description": owner.description,
        "token": token,
        "pid": owner.pid,
        "pid_scope": owner.pid_scope,
        "acquired_at": now,
        "expires_at": until,
    }
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    claim = (
        insert(campaign_runs)
        .values(campaign_id=campaign_id, **values)
        .on_conflict_do_update(
            index_elements=["campaign_id"],
            set_=values,
            where=(_r.expires_at <= now) | (_r.owner == owner.id),
        )
        .returning(_r.token)
    )
    taken = RunLease(campaign_id, owner.id, owner.description, token, owner.pid, owner.pid_scope, now, until)
    take_over = update(campaign_runs).where(_r.campaign_id == campaign_id).values(**values)
    for _ in range(2):  # a row deleted between the two statements is claimed on the second pass
        if conn.execute(claim).first() is not None:
            return taken
        # PostgreSQL has locked the row now: ON CONFLICT DO UPDATE locks it even when WHERE is false.
        holder = current(conn, campaign_id)
        if holder is None:
            continue
        if holder.abandoned() and conn.execute(take_over.where(_r.token == holder.token)).rowcount == 1:
            return taken
        raise holder.busy()
    raise LedgerError(f"campaign {campaign_id!r}: its run lease row keeps changing; try again")


def renew(conn: Connection, campaign_id: str, held: HeldLease, now: datetime) -> None:
    """Extend the lease the ledger holds to `now` + its ttl; `RunLeaseLost` if another run took it over.

    An expired lease that no run took over is still this run's: renewing it is safe, because a run takes the
    lease before it recovers or submits anything.
    """
    extend = update(campaign_runs).where(_r.campaign_id == campaign_id, _r.token == held.token)
    until = now + timedelta(seconds=held.ttl)
    if conn.execute(extend.values(expires_at=until)).rowcount != 1:
        holder = current(conn, campaign_id)
        if holder is None:
            raise RunLeaseLost(campaign_id, None, None)
        raise RunLeaseLost(campaign_id, holder.description, holder.expires_at)


def release(conn: Connection, campaign_id: str, held: HeldLease) -> bool:
    """Delete the lease row if it is still that acquisition's; True if it was."""
    mine = delete(campaign_runs).where(_r.campaign_id == campaign_id, _r.token == held.token)
    return conn.execute(mine).rowcount == 1


def fence(conn: Connection, campaign_id: str, held: HeldLease | None, now: datetime) -> None:
    """Before a write that must not race with another run: renew the lease held, or check nobody holds one.

    Raises:
        RunLeaseLost: the ledger held the lease and it was taken over.
        CampaignBusy: the ledger holds no lease and another run does.
    """
    if held is not None:
        renew(conn, campaign_id, held, now)
        return
    holder = current(conn, campaign_id)
    if holder is not None and holder.blocks(now):
        raise holder.busy()
