"""Convert trace files to the JSONL collective-trace format (docs/trace-formats.md), for tools and people
that do not run hangdoc:

    python -m hangdoc.tracer.export TRACE_DIR OUT_DIR

One `<host>-<pid>.jsonl` per trace file: a header line with rank, host, pid and the groups' member ranks,
then one line per recorded call, oldest first. `hangdoc analyze OUT_DIR` reads the result back the same.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hangdoc.importers.hangdoc_trace import table
from hangdoc.tracer import format as F
from hangdoc.tracer import reader

_FIELDS = ("group", "group_desc", "seq", "op", "reduce_op", "dtype", "in_shapes", "in_numel", "out_numel", "peer",
           "state", "t_issue", "call_site", "record_id")


def export_file(path: Path, out_dir: Path) -> tuple[Path, list[str]]:
    tf = reader.read(path)
    out = out_dir / (path.name[: -len(F.SUFFIX)] + ".jsonl")
    groups = {g.name: sorted(g.ranks) for g in tf.groups.values() if g.ranks}
    with out.open("w", encoding="utf-8") as fh:
        header = {"hangdoc_trace": 1, "rank": tf.rank, "host": tf.host, "pid": tf.pid, "groups": groups}
        fh.write(json.dumps(header) + "\n")
        for row in table(tf).to_pylist():
            line = {k: row[k] for k in _FIELDS if row[k] is not None}
            line["t"] = line.pop("t_issue")
            fh.write(json.dumps(line) + "\n")
    return out, tf.notes


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    src, dst = Path(args[0]), Path(args[1])
    files = sorted(src.glob(f"*{F.SUFFIX}")) if src.is_dir() else [src]
    if not files:
        print(f"{src}: no {F.SUFFIX} files", file=sys.stderr)
        return 2
    dst.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in files:
        try:
            out, notes = export_file(path, dst)
        except (OSError, reader.TraceFormatError) as exc:
            print(f"{path}: skipped: {exc}", file=sys.stderr)
            status = 1
            continue
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(out)
    return status


if __name__ == "__main__":
    sys.exit(main())
