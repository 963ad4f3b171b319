"""Untrusted dumps: a pickle that would run code is refused and never runs; plain data still loads."""
from __future__ import annotations

import builtins
import copyreg
import io
import os
import pickle
import subprocess
from pathlib import Path

import pytest

from hangdoc.errors import InputError
from hangdoc.importers import flight_recorder as fr
from hangdoc.importers import load_inputs, safe_pickle
from fr_synthetic import Call, dump, write_rank


class _Call:
    """Pickles as a call of `fn(*args)`: what an attacker's dump would hold."""

    def __init__(self, fn: object, *args: object) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


def payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    evil = {
        "os.system": _Call(os.system, cmd),
        "eval": _Call(builtins.eval, f"__import__('os').system({cmd!r})"),
        "subprocess": _Call(subprocess.call, ["touch", str(marker)]),
    }
    out = {}
    for name, obj in evil.items():
        for proto in (2, 4, 5):  # GLOBAL (2) and STACK_GLOBAL (4, 5)
            # shaped like a real dump, so the sniffer claims it and the loader must refuse it
            out[f"{name}-p{proto}"] = pickle.dumps({"version": "2.10", "pg_config": {}, "entries": [obj]}, protocol=proto)

    class PersistentPickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return "payload" if obj == "x" else None

    buf = io.BytesIO()
    PersistentPickler(buf, protocol=2).dump({"version": "2.10", "pg_config": {}, "entries": ["x"]})
    out["persistent-id"] = buf.getvalue()
    out["inst-protocol-0"] = f"(S'{cmd}'\nios\nsystem\n.".encode()
    return out


def test_every_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for name, data in payloads(marker).items():
        with pytest.raises(pickle.UnpicklingError):
            safe_pickle.loads(data)
        assert not marker.exists(), name
    # sanity: the payload really is live, so the test above can fail
    pickle.loads(payloads(marker)["os.system-p2"])
    assert marker.exists()


def test_extension_codes_are_refused_too(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    copyreg.add_extension("os", "system", 0xF0)
    try:
        data = b"\x80\x02\x82\xf0" + pickle.dumps((f"touch {marker}",), protocol=2)[2:-1] + b"R."
        with pytest.raises(pickle.UnpicklingError, match="refused"):
            safe_pickle.loads(data)
        assert not marker.exists()
        pickle.loads(data)  # sanity: the payload is live
        assert marker.exists()
    finally:
        copyreg.remove_extension("os", "system", 0xF0)


def test_plain_data_loads_with_tuples_and_big_ints() -> None:
    value = {"version": "2.10", "entries": [{"process_group": ("0", "default_pg"), "time_created_ns": 2**62, "retired": True, "x": None, "f": 1.5}]}
    assert safe_pickle.loads(pickle.dumps(value, protocol=2)) == value


def test_malicious_rank_file_is_a_note_and_other_ranks_are_kept(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    d = tmp_path / "dumps"
    w = ("0", "default_pg")
    for rank in (0, 1):
        write_rank(d, rank, dump([Call(w, "all_reduce", 1)], "2.10", {"0": ("default_pg", [0, 1, 2])}))
    (d / "nccl_trace_rank_2").write_bytes(payloads(marker)["os.system-p2"])
    assert fr.matches(d / "nccl_trace_rank_2")
    bundle = load_inputs([d])
    assert {r["rank"] for r in bundle.table("collectives").to_pylist()} == {0, 1}
    note = next(n for n in bundle.notes if "nccl_trace_rank_2" in n)
    assert "refused to load posix.system" in note or "refused to load os.system" in note
    assert not marker.exists()


def test_a_lone_malicious_dump_is_one_input_error(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    f = tmp_path / "nccl_trace_rank_0"
    f.write_bytes(payloads(marker)["eval-p4"])
    with pytest.raises(InputError) as err:
        load_inputs([f])
    assert "refused to load builtins.eval" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
