"""What log lines say about ranks: collective positions (collectives rows) and per-rank happenings.

The lines people paste from a hung job are evidence about *some* rank, often not the one that printed them:
a c10d watchdog timeout says its printer was waiting in call SeqNum N; a desync report or the Flight Recorder
analyzer's text names other ranks' positions; NCCL RAS counts how far each rank got. `Reader` turns each
recognised line (or block of lines) into facts, one rank each:

- collectives rows, `source` = the format (c10d-watchdog, desync-debug, detail-mismatch, fr-trace-text,
  nccl-ras, nccl-info) and `state` as the line says (timed_out / started / completed / unknown);
- per-rank events (log_events rows with `event`): a traceback's exception, a torchrun exit record.

The analysis passes then line these up like any trace. Nothing here decides who is at fault.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hangdoc.importers.ops import normalize_op, normalize_reduce_op

C10D = "c10d-watchdog"
DESYNC = "desync-debug"
DETAIL = "detail-mismatch"
FR_TEXT = "fr-trace-text"
RAS = "nccl-ras"
NCCL_INFO = "nccl-info"
TRACEBACK = "traceback"
TORCHRUN = "torchrun-failure"
SOURCES = frozenset((C10D, DESYNC, DETAIL, FR_TEXT, RAS, NCCL_INFO))
DEFAULT_PG = "0"  # the c10d default process group: its members are every rank of the job
# A watchdog line that names no process group (PyTorch before 2.3, or a line split from its prefix): its SeqNum
# is aligned only with lines that do name one for the same rank and SeqNum (see logfile._merge_calls).
UNNAMED_PG = "unnamed"

# "[PG ID 0 PG GUID 0(default_pg) Rank 1]" (2.4+), "[PG 0 (default_pg) Rank 1]", "[PG 3 Rank 1]" (2.3), or none.
PG_PREFIX = re.compile(
    r"\[PG(?: ID)? (?P<pg>\d+)(?: PG GUID (?P<guid>[^\s(\]]+))?\s*(?:\((?P<desc>[^)]*)\))? Rank (?P<rank>\d+)\]"
)
_WORK = re.compile(
    r"WorkNCCL\(SeqNum=(?P<seq>\d+), OpType=(?P<op>\w+)(?:, NumelIn=(?P<nin>-?\d+))?(?:, NumelOut=(?P<nout>-?\d+))?"
)
_WATCHDOG = re.compile(r"Watchdog caught collective operation timeout")
# PG status lines, newest first: how far this rank got on the process group.
_PG_STATUS = (
    re.compile(r"failure detected by watchdog at work sequence id: (?P<seq>\d+) PG status: last enqueued work: "
               r"(?P<enq>-?\d+), last completed work: (?P<done>-?\d+)"),
    re.compile(r"(?:Exception \(either an error or timeout\) detected by watchdog at work|Timeout at NCCL work): "
               r"(?P<seq>\d+), last enqueued NCCL work: (?P<enq>-?\d+), last completed NCCL work: (?P<done>-?\d+)"),
    # the dump-signal line (2.3+) gives the position with no call of its own
    re.compile(r"(?P<seq>)[Ll]ast enqueued NCCL work: (?P<enq>-?\d+), last completed NCCL work: (?P<done>-?\d+)"),
)
# TORCH_NCCL_DESYNC_DEBUG report lines (one rank prints them about every rank of its process group).
_DESYNC_TIMEOUT = re.compile(r"- \[(?P<rank>\d+)\] Timeout at collective: (?P<op>\w+), #(?P<seq>\d+)")
_DESYNC_MISSING = re.compile(r"ranks \[(?P<ranks>[\d, ]+)\] are the lagging ranks that caused this timeout")
_DESYNC_JOINED = re.compile(r"\[(?P<ranks>[\d, ]+)\] joined but didn't finish collective #(?P<seq>\d+)")
_DESYNC_FINISHED = re.compile(r"\[(?P<ranks>[\d, ]+)\] finished collective #(?P<seq>\d+), but didn't join collective #")
_DESYNC_SNAP_HEAD = re.compile(r"#(?P<seq>\d+) (?P<what>started|finished) ranks:")
_DESYNC_SNAP = re.compile(r"^\s*\[(?P<ranks>[\d, ]+)\] (?P<what>started|finished) (?P<op>\w+)\s*$")
# TORCH_DISTRIBUTED_DEBUG=DETAIL (ProcessGroupWrapper) fingerprints.
_FINGERPRINT = re.compile(
    r"Rank (?P<rank>\d+) is running (?:inconsistent )?collective: CollectiveFingerPrint\("
    r"(?:SequenceNumber=(?P<seq>\d+), ?)?OpType=(?P<op>\w+)(?:, ?TensorShape=\[(?P<shape>[^\]]*)\])?"
    r"(?:, ?TensorDtypes=(?P<dtype>\w+))?"
)
# PyTorch's Flight Recorder analyzer (torchfrtrace / fr_trace) text.
_FR_HEAD = re.compile(r"Not all ranks joining collective(?: (?P<seq>\d+) at entry \d+|[,:] sequence number: (?P<seq2>\d+)"
                      r"| for group (?P<group>\S+) collective (?P<op>\S+))")
_FR_GROUP = re.compile(r"^\s*group info: (?P<group>\S+)")
_FR_OP = re.compile(r"^\s*collective: (?P<op>\S+)")
_FR_MISSING = re.compile(r"(?:missing ranks: |Missing ranks are )\{(?P<ranks>[\d, ]*)\}")
_FR_EXPECTED = re.compile(r"^\s*(?:expected ranks|world size): (?P<n>\d+|\{[\d, ]*\})")
_FR_STATE = re.compile(r"^\s*collective state: (?P<state>\w+)")
# NCCL RAS (ncclras) text.
_RAS_COMM = re.compile(r"^\s*#(?P<group>\d+-\d+) \((?P<hash>[0-9a-f]+)\) (?P<status>[A-Z_]+)")
_RAS_COUNTS = re.compile(r"Communicator ranks have different (?:(?P<op>\w+) )?operation counts")
_RAS_LAUNCHED = re.compile(r"(?P<n>\d+) ranks? ha(?:s|ve) launched up to operation (?P<seq>\d+)")
_RAS_RANK = re.compile(r"^\s*Rank (?P<rank>\d+) -- GPU \d+ managed by process (?P<pid>\d+) on node (?P<node>\S+)")
_RAS_TABLE = re.compile(r"^\s*(?P<grp>\d+)\s+\d+\s+\d+\s+\d+\s+(?P<per_comm>\d+)\s+\d+\s+[A-Z]+")
# NCCL_DEBUG=INFO (COLL subsystem) lines and the init lines that map a comm pointer to its rank.
_NCCL_COLL = re.compile(
    r"NCCL INFO (?:\[\d+\] )?(?P<op>AllReduce|AllGather|ReduceScatter|Broadcast|Reduce|Send|Recv|AllToAll|Gather|Scatter)"
    r": opCount (?P<count>[0-9a-f]+) .*?count (?P<n>\d+) datatype (?P<dt>\d+) op (?P<red>\d+) root (?P<root>\d+) "
    r"comm (?P<comm>0x[0-9a-f]+)(?: \[nranks=(?P<nranks>\d+)\])?"
)
_NCCL_INIT = re.compile(r"NCCL INFO comm (?P<comm>0x[0-9a-f]+) rank (?P<rank>\d+) nranks (?P<nranks>\d+)"
                        r"(?:.*?commId (?P<id>0x[0-9a-f]+))?")
_NCCL_DTYPES = ("int8", "uint8", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64", "bfloat16",
                "float8_e4m3fn", "float8_e5m2")
_NCCL_REDOPS = ("SUM", "PRODUCT", "MAX", "MIN", "AVG")
# Python tracebacks (torchrun prefixes each line of rank N's stderr with "[rankN]:") and torchrun's failure records.
_TORCH_PREFIX = re.compile(r"^\[rank\d+\]:\s?")
_TB_START = re.compile(r"Traceback \(most recent call last\):")
_TB_EXC = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)|[\w.]*OutOfMemoryError)"
                     r"(?::\s*(?P<msg>.*))?$")
_TB_TIMEOUT = re.compile(r"Watchdog caught collective operation timeout|timed? ?out|Timeout", re.I)
_TB_OOM = re.compile(r"out of memory|OutOfMemoryError", re.I)
# An exception that says a peer went away: the raiser is a survivor, not a cause.
_TB_PEER = re.compile(r"remote process|ncclRemoteError|Connection (?:closed|reset)|Broken pipe|"
                      r"communicator was aborted|peer .*(?:exited|crashed)", re.I)
_ELASTIC_FIELD = re.compile(r"^\s*(?P<key>time|host|rank|exitcode|traceback)\s*: (?P<value>.*)$")
_ELASTIC_RANK = re.compile(r"(?P<rank>\d+) \(local_rank: (?P<local>\d+)\)")
_ELASTIC_EXIT = re.compile(r"(?P<code>-?\d+) \(pid: (?P<pid>\d+)\)")
_ELASTIC_HINT = re.compile(r"Root Cause|Failures:|^\s*\[\d+\]:\s*$|^\s*time\s*: ")
_SIGNAL = re.compile(r"Signal (?P<num>\d+) \((?P<name>SIG\w+)\)")


def work_readable(line: str) -> bool:
    """Does the line hold a whole WorkNCCL(SeqNum=.., OpType=..) record?"""
    return _WORK.search(line) is not None


def _numel(text: str | None) -> int | None:
    """An element count; None when absent or not a count (coalesced works print 2**64 - 1)."""
    if not text:
        return None
    n = int(text)
    return n if 0 <= n < 1 << 62 else None


def _ranks(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def _shape(text: str | None) -> list[int] | None:
    if text is None:
        return None
    dims = _ranks(text)
    return dims


@dataclass
class Fact:
    """One collectives row (`row`) and the line it came from. `rank` None: the printer's rank, resolved later."""

    row: dict[str, Any]
    who: Any  # the writer key the line's rank resolves from (pid or explicit rank), when `row["rank"]` is None
    file: str
    line_no: int


@dataclass
class _Traceback:
    start_line: int
    t: float | None
    frames: int = 0


@dataclass
class Reader:
    """Facts of one log file, fed line by line (`feed(no, who, t, body)`), then `finish()`."""

    file: str
    host: str | None = None
    facts: list[Fact] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # log_events rows (rank None: the writer's)
    event_who: list[Any] = field(default_factory=list)  # per event: the writer key, for rank resolution
    formats: set[str] = field(default_factory=set)
    _pg: dict[Any, tuple[str, str | None]] = field(default_factory=dict)  # writer -> last process group named
    _desync_seq: dict[Any, tuple[int, str]] = field(default_factory=dict)  # writer -> snapshot section
    _fr: dict[str, Any] | None = None
    _ras: dict[str, Any] | None = None
    _ras_size: dict[str, int] = field(default_factory=dict)
    _tb: dict[Any, _Traceback] = field(default_factory=dict)
    _elastic: dict[str, Any] | None = None
    _nccl_comms: dict[tuple[Any, str], tuple[int, int, str | None]] = field(default_factory=dict)

    # --- output helpers ----------------------------------------------------------------------------
    def _coll(self, no: int, who: Any, source: str, rank: int | None, **row: Any) -> None:
        row.setdefault("host", self.host)
        self.facts.append(Fact({"rank": rank, "source": source, **row}, who, self.file, no))
        self.formats.add(source)

    def _event(self, no: int, who: Any, rank: int | None, event: str, signature: str, text: str,
               t: float | None, severity: str = "error") -> None:
        self.events.append({"host": self.host, "file": self.file, "line_no": no, "t": t, "rank": rank,
                            "signature": signature, "event": event, "severity": severity, "text": text[:2000],
                            "context": []})
        self.event_who.append(who)
        self.formats.add(signature)

    # --- the line reader -----------------------------------------------------------------------------
    def feed(self, no: int, who: Any, t: float | None, body: str) -> None:
        """One line; `who` keys its writer (a pid, or an explicit rank), `t` its time when the prefix gives one."""
        if self._tb or "Traceback" in body:
            self._traceback(no, who, t, _TORCH_PREFIX.sub("", body, count=1))
        if self._elastic is not None or _ELASTIC_HINT.search(body):
            self._torchrun(no, body)
        if "NCCL work" in body or "WorkNCCL" in body or "work sequence id" in body:
            self._c10d(no, who, t, body)
        if "ollective" in body or " started " in body or " finished " in body or "lagging ranks" in body:
            self._desync(no, who, t, body)
        self._detail(no, who, t, body)
        if self._fr is not None or "Not all ranks" in body:
            self._fr_text(no, who, body)
        if self._ras is not None or "#" in body or " -- GPU " in body or "MISMATCH" in body or "RUNNING" in body:
            self._ras_text(no, who, body)
        self._nccl(no, who, t, body)

    def finish(self) -> None:
        self._fr_flush()
        self._elastic_flush(0)

    # --- c10d watchdog ---------------------------------------------------------------------------------
    def _group(self, who: Any, body: str) -> tuple[str | None, str | None, int | None]:
        """(process group id, description, the rank the prefix names) the line's prefix gives, else the writer's last."""
        m = PG_PREFIX.search(body)
        if m:
            pg = (m["pg"], m["desc"] or (m["guid"] if m["guid"] and not m["guid"].isdigit() else None))
            self._pg[who] = pg
            return pg[0], pg[1], int(m["rank"])
        pg = self._pg.get(who)
        return (pg[0], pg[1], None) if pg else (None, None, None)

    def _c10d(self, no: int, who: Any, t: float | None, body: str) -> None:
        work = _WORK.search(body) if _WATCHDOG.search(body) or "Timeout(ms)" in body else None
        status = next((m for m in (p.search(body) for p in _PG_STATUS) if m), None)
        if work is None and status is None:
            return
        pg, desc, _ = self._group(who, body)
        group = pg if pg is not None else UNNAMED_PG
        base = {"group": group, "group_desc": desc or ("default_pg" if group == DEFAULT_PG else None)}
        if work is not None:
            nin, nout = _numel(work["nin"]), _numel(work["nout"])
            self._coll(no, who, C10D, None, seq=int(work["seq"]), op=normalize_op(work["op"]), in_numel=nin,
                       out_numel=nout, state="timed_out" if _WATCHDOG.search(body) else "started", **base)
        if status is not None:
            enq, done = int(status["enq"]), int(status["done"])
            seq = int(status["seq"]) if status["seq"] else enq + 1  # no call of its own: nothing timed out here
            if status["seq"]:
                self._coll(no, who, C10D, None, seq=seq, state="timed_out", **base)
            elif enq > done:
                self._coll(no, who, C10D, None, seq=enq, state="started", **base)
            if done > 0 and done < seq and (status["seq"] or done < enq or enq == done):
                self._coll(no, who, C10D, None, seq=done, state="completed", **base)
            if status["seq"] and enq > seq:
                self._coll(no, who, C10D, None, seq=enq, state="issued", **base)

    # --- TORCH_NCCL_DESYNC_DEBUG -------------------------------------------------------------------------
    def _desync(self, no: int, who: Any, t: float | None, body: str) -> None:
        pg, desc, _ = self._group(who, body) if "PG" in body else (*self._pg.get(who, (None, None)), None)
        base = {"group": pg if pg is not None else UNNAMED_PG, "group_desc": desc}
        m = _DESYNC_TIMEOUT.search(body)
        if m:
            self._coll(no, who, DESYNC, int(m["rank"]), seq=int(m["seq"]), op=normalize_op(m["op"]), state="timed_out",
                       t_issue=t, **base)
        m = _DESYNC_MISSING.search(body)
        if m:
            for r in _ranks(m["ranks"]):
                self._event(no, who, r, "other", DESYNC, f"desync report: rank {r} never joined any collective "
                            f"of process group {base['group']}", t, "warning")
        m = _DESYNC_JOINED.search(body)
        if m:
            for r in _ranks(m["ranks"]):
                self._coll(no, who, DESYNC, r, seq=int(m["seq"]), state="started", **base)
        m = _DESYNC_FINISHED.search(body)
        if m:
            for r in _ranks(m["ranks"]):
                self._coll(no, who, DESYNC, r, seq=int(m["seq"]), state="completed", **base)
        m = _DESYNC_SNAP_HEAD.search(body)
        if m:
            self._desync_seq[who] = (int(m["seq"]), m["what"])
            return
        m = _DESYNC_SNAP.search(body)
        if m and who in self._desync_seq:
            seq, _ = self._desync_seq[who]
            for r in _ranks(m["ranks"]):
                self._coll(no, who, DESYNC, r, seq=seq, op=normalize_op(m["op"]),
                           state="started" if m["what"] == "started" else "completed", **base)

    # --- TORCH_DISTRIBUTED_DEBUG=DETAIL ------------------------------------------------------------------
    def _detail(self, no: int, who: Any, t: float | None, body: str) -> None:
        if "CollectiveFingerPrint(" not in body:
            return
        for m in _FINGERPRINT.finditer(body):
            shape = _shape(m["shape"])
            numel = None
            if shape is not None:
                numel = 1
                for d in shape:
                    numel *= d
            self._coll(no, who, DETAIL, int(m["rank"]), group="detail", seq=int(m["seq"]) if m["seq"] else 0,
                       op=normalize_op(m["op"]), dtype=m["dtype"], in_shapes=[shape] if shape is not None else None,
                       in_numel=numel, state="started")

    # --- torchfrtrace text ---------------------------------------------------------------------------------
    def _fr_text(self, no: int, who: Any, body: str) -> None:
        m = _FR_HEAD.search(body)
        if m:
            self._fr_flush()
            seq = m["seq"] or m["seq2"]
            self._fr = {"no": no, "who": who, "seq": int(seq) if seq else None, "group": m["group"], "op": m["op"]}
            # the old one-line form carries the rest on the same line
            if m["group"] is None:
                return
        if self._fr is None:
            return
        fr = self._fr
        for pat, key in ((_FR_GROUP, "group"), (_FR_OP, "op"), (_FR_EXPECTED, "expected"), (_FR_STATE, "state")):
            g = pat.search(body)
            if g and (key != "expected" or not str(fr.get(key, "")).startswith("{")):
                fr[key] = g.group(1)
        g = _FR_MISSING.search(body)
        if g:
            fr["missing"] = _ranks(g["ranks"])
        if no - fr["no"] > 40:
            self._fr_flush()

    def _fr_flush(self) -> None:
        fr, self._fr = self._fr, None
        if not fr or fr.get("missing") is None:
            return
        group = str(fr.get("group") or DEFAULT_PG)
        gid, _, desc = group.partition(":")
        missing = fr["missing"]
        # Members: the analyzer's own list ("expected ranks: {0, 1, ...}"), or for the default group 0..n-1.
        expected = fr.get("expected")
        members = _ranks(expected) if expected and expected.startswith("{") else None
        if members is None and expected and (gid == DEFAULT_PG or desc == "default_pg"):
            members = list(range(int(expected)))
        seq = fr.get("seq") if fr.get("seq") is not None else 0
        state = "started" if fr.get("state") in ("scheduled", "started", None) else fr.get("state")
        if members:
            expected = len(members)
            for r in members:
                if r not in missing:
                    self._coll(fr["no"], fr["who"], FR_TEXT, r, group=gid, group_desc=desc or None, seq=seq,
                               op=normalize_op(fr["op"]) if fr.get("op") else None, state=state,
                               group_ranks=members, group_size=expected)
        for r in missing:  # the analyzer read these ranks' dumps: their silence is evidence ("seen")
            self._event(fr["no"], fr["who"], r, "seen", FR_TEXT,
                        f"Flight Recorder analyzer: rank {r} did not join collective {seq} "
                        f"({fr.get('op') or 'unknown op'}) of group {group}", None, "warning")

    # --- NCCL RAS --------------------------------------------------------------------------------------
    def _ras_text(self, no: int, who: Any, body: str) -> None:
        m = _RAS_TABLE.search(body)
        if m:
            self._ras_size[m["grp"]] = int(m["per_comm"])
        m = _RAS_COMM.search(body)
        if m:
            self._ras = {"no": no, "group": m["group"], "counts": [], "ranks": [], "op": None}
            return
        if self._ras is None:
            return
        ras = self._ras
        m = _RAS_COUNTS.search(body)
        if m:
            ras["op"] = m["op"]
            return
        m = _RAS_LAUNCHED.search(body)
        if m:
            ras["counts"].append((int(m["n"]), int(m["seq"])))
            return
        m = _RAS_RANK.search(body)
        if m:
            ras["ranks"].append(int(m["rank"]))
            self._ras_emit(no, who)
            return
        if body.strip() and not body.startswith(" "):
            self._ras = None

    def _ras_emit(self, no: int, who: Any) -> None:
        """The listed ranks are the smaller side of the split; the rest of the communicator is the other."""
        ras = self._ras
        if ras is None or len(ras["counts"]) != 2:
            return
        (n_a, seq_a), (n_b, seq_b) = ras["counts"]
        small = (n_a, seq_a) if n_a <= n_b else (n_b, seq_b)
        big = (n_b, seq_b) if small == (n_a, seq_a) else (n_a, seq_a)
        if len(ras["ranks"]) != small[0]:
            return  # wait for the whole list
        total = self._ras_size.get(ras["group"].split("-")[0], n_a + n_b)
        members = list(range(total))
        op = normalize_op(ras["op"]) if ras["op"] else None
        group = f"ras:{ras['group']}"
        for r in members:
            seq = small[1] if r in ras["ranks"] else big[1]
            self._coll(ras["no"], who, RAS, r, group=group, seq=seq, op=op, state="started",
                       group_ranks=members, group_size=total)
        self._ras = None

    # --- NCCL_DEBUG=INFO ----------------------------------------------------------------------------------
    def _nccl(self, no: int, who: Any, t: float | None, body: str) -> None:
        if "NCCL INFO" not in body:
            return
        m = _NCCL_INIT.search(body)
        if m:
            self._nccl_comms[(who, m["comm"])] = (int(m["rank"]), int(m["nranks"]), m["id"])
            return
        m = _NCCL_COLL.search(body)
        if not m:
            return
        known = self._nccl_comms.get((who, m["comm"]))
        nranks = int(m["nranks"]) if m["nranks"] else (known[1] if known else None)
        group = f"nccl:{known[2]}" if known and known[2] else f"nccl:nranks={nranks}"
        dt = int(m["dt"])
        red = int(m["red"])
        op = normalize_op(m["op"])
        self._coll(no, who, NCCL_INFO, None, group=group, seq=int(m["count"], 16) + 1, op=op,
                   dtype=_NCCL_DTYPES[dt] if dt < len(_NCCL_DTYPES) else str(dt),
                   reduce_op=normalize_reduce_op(_NCCL_REDOPS[red]) if red < len(_NCCL_REDOPS) else None,
                   in_numel=int(m["n"]), out_numel=int(m["n"]), group_size=nranks,
                   rank_in_group=known[0] if known else None, state="unknown", t_issue=t)

    # --- tracebacks -------------------------------------------------------------------------------------
    def _traceback(self, no: int, who: Any, t: float | None, body: str) -> None:
        if _TB_START.search(body):
            self._tb[who] = _Traceback(no, t)
            return
        tb = self._tb.get(who)
        if tb is None:
            return
        text = body.strip()
        if not text or body[:1] in (" ", "\t") or text.startswith(("File ", "^", "~")):
            tb.frames += 1
            return
        m = _TB_EXC.match(text)
        if m is None:
            if tb.frames > 200:
                del self._tb[who]
            tb.frames += 1
            return
        del self._tb[who]
        if _TB_OOM.search(text):
            return  # the catalogue's cuda_oom has this line already
        event = "timeout" if _TB_TIMEOUT.search(text) else "peer_gone" if _TB_PEER.search(text) else "raised"
        self._event(no, who, None, event, TRACEBACK, text, t if t is not None else tb.t)

    # --- torchrun failure records -------------------------------------------------------------------------
    def _torchrun(self, no: int, body: str) -> None:
        head = re.search(r"Root Cause \(first observed failure\):|^\s*Failures:\s*$|^\s*\[\d+\]:\s*$", body)
        if head:
            first = "Root Cause" in body or bool(self._elastic and self._elastic.get("first") and "rank" not in self._elastic)
            self._elastic_flush(no)
            self._elastic = {"no": no, "first": first}
            return
        m = _ELASTIC_FIELD.match(body)
        if self._elastic is None:
            if not m or m["key"] != "time":
                return
            self._elastic = {"no": no}  # a record whose header was cut off
        if m:
            self._elastic[m["key"]] = m["value"].strip()
            if m["key"] == "traceback":
                self._elastic_flush(no)
        elif body.strip() and not body.startswith(" ") and not body.startswith("-") and not body.startswith("="):
            self._elastic_flush(no)

    def _elastic_flush(self, no: int) -> None:
        rec, self._elastic = self._elastic, None
        if not rec or "rank" not in rec or "exitcode" not in rec:
            return
        r = _ELASTIC_RANK.search(rec["rank"])
        e = _ELASTIC_EXIT.search(rec["exitcode"])
        if not r or not e:
            return
        code = int(e["code"])
        sig = _SIGNAL.search(rec.get("traceback", "")) or None
        what = f"exit code {code}" + (f" ({sig['name']})" if sig else "")
        text = (f"torchrun: rank {r['rank']} (local_rank {r['local']}, pid {e['pid']}) on "
                f"{rec.get('host', '?')} failed at {rec.get('time', '?')}: {what}"
                + (" (torchrun's first observed failure)" if rec.get("first") else ""))
        t = _elastic_time(rec.get("time"))
        self._event(rec["no"], None, int(r["rank"]), "signal" if code < 0 or sig else "exited", TORCHRUN, text, t)


def _elastic_time(value: str | None) -> float | None:
    """torchrun's '2024-03-05_12:00:00' (local time of the launcher host, read as UTC like every other prefix)."""
    import calendar

    m = re.match(r"(\d{4})-(\d\d)-(\d\d)_(\d\d):(\d\d):(\d\d)", value or "")
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups())
    return float(calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)))
