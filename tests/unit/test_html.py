"""The HTML report: a self-contained page whose pictures say who diverged, who waits for whom and who swapped
calls, with every string from a trace escaped."""
from __future__ import annotations

import html
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hangdoc.analysis.model import Diagnosis, GpuSeries, OpCall, Verdict, WaitEdge
from hangdoc.analysis.pipeline import diagnose
from hangdoc.importers import load_inputs
from hangdoc.report import html as html_report
from hangdoc.report import markdown, render_text

from report_cases import healthy, huge, seed001

SEED001 = Path(__file__).resolve().parents[2] / "fixtures" / "seed001-tp4-dp2"


class Page(HTMLParser):
    """Every element's tag and attributes, in order, plus the text of the elements that carry an id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text_of: dict[str, str] = {}
        self.scripts: list[str] = []
        self._open: list[tuple[str, str | None]] = []
        self._texts: dict[str, list[str]] = {}
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag in ("br", "meta", "rect", "path", "line", "polyline", "circle", "i", "input"):
            return
        self._open.append((tag, a.get("id")))
        if a.get("id"):
            self._texts[a["id"]] = []
        if tag == "script":
            self.scripts.append("")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            t, ident = self._open.pop()
            if ident:
                self.text_of[ident] = "".join(self._texts.pop(ident))
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self._texts[ident].append(data)
        if self._open and self._open[-1][0] == "script":
            self.scripts[-1] += data

    def find(self, tag: str | None = None, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if (tag is None or t == tag)
                and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())]


@pytest.fixture(scope="module")
def real_seed001() -> Diagnosis:
    return diagnose(load_inputs([SEED001]))


def test_seed001_picture_marks_the_culprit_its_odd_call_the_waits_and_the_swap(real_seed001: Diagnosis) -> None:
    d = real_seed001
    page = Page(html_report.render(d))
    assert [a["data-group"] for a in page.find("g", **{"class": "panel"})][0] == "tp:1"  # the verdict's first
    # rank 6's row is the culprit's in both pictures
    assert {a["data-rank"] for a in page.find("g", data_culprit="6")} == {"6"}
    assert len(page.find("g", data_culprit="6")) == 2
    # its all_gatherv is the one diverging cell, at its own seq, lined up with its peers' all_reduce
    diverging = page.find("g", data_diverging="1")
    assert [(a["data-rank"], a["data-op"], a["data-seq"]) for a in diverging] == [("6", "all_gather", "4814")]
    stuck = [a for a in page.find("g") if "inflight" in a.get("class", "") and a.get("data-seq") == "4797"]
    assert {"4", "5", "7"} <= {a["data-rank"] for a in stuck}
    # every wait-for edge of the analysis is an arrow; those into rank 6 are the hot ones
    arrows = {(a["data-from"], a["data-to"]): a["class"] for a in page.find("path") if "data-from" in a}
    assert set(arrows) == {(str(e.rank), str(e.waits_on)) for e in d.wait_for} and arrows
    assert all(("hot" in cls) == (to == "6") for (_, to), cls in arrows.items())
    # the swap: rank 6 is 17 short on dp and 17 long on tp; nobody else is off by more than one call
    bars = {(a["data-rank"], a["data-family"]): float(a["data-delta"]) for a in page.find("g") if "data-family" in a}
    assert bars[("6", "dp")] == -17 and bars[("6", "tp")] == 17
    assert all(abs(v) <= 1 for (r, _), v in bars.items() if r != "6")
    assert page.find("g", data_swap="1") and {a["data-rank"] for a in page.find("g", data_swap="1")} == {"6"}
    # the header names the culprit, and the Markdown for an issue comes along verbatim
    assert page.find("span", data_culprit="6")
    assert page.text_of["markdown-source"] == markdown.render(d)
    assert "all_gatherv [14, 256]" in page.text_of["text"] and "call_count_swap" in page.text_of["text"]


def test_the_page_loads_nothing_from_anywhere(real_seed001: Diagnosis) -> None:
    text = html_report.render(real_seed001)
    assert not re.search(r"""(?:src|href|action|xlink:href)\s*=\s*["']?(?:https?:|//|file:)""", text, re.I)
    assert not re.search(r"@import|url\((?!#)", text)
    assert "default-src 'none'" in text  # and the browser is told so
    page = Page(text)
    assert not page.find("link") and not page.find("img") and not page.find("iframe")
    assert all("src" not in a for _, a in page.elements)


def test_text_from_traces_is_escaped_everywhere() -> None:
    evil = '<script>alert("x")</script>'
    d = seed001()
    calls = tuple(replace(c, op=f"all_reduce{evil}" if c.rank == 6 else c.op) for c in d.findings[0].calls)
    mismatch = replace(d.findings[0], group=f"tp:1{evil}", calls=calls, summary=f"summary {evil}",
                       evidence=(f"</pre>{evil}",), op=f"op{evil}")
    d = replace(
        d, findings=(mismatch,) + d.findings[1:], verdict=replace(d.verdict, group=f"tp:1{evil}", summary=evil),
        rank_labels={**d.rank_labels, 6: f"</text>{evil}"}, notes=(evil,), inputs=(f"dir/{evil}",),
        environment={f"NCCL_{evil}": evil}, wait_for=(WaitEdge(4, 6, f"g{evil}"),),
        gpus=(GpuSeries(host=f"h{evil}", gpu=0, rank=6, sm_util=(99.0,), mem_bw_util=(1.0,)),),
    )
    text = html_report.render(d)
    page = Page(text)
    assert len(page.find("script")) == 1 and page.scripts == [html_report._JS]
    assert "<script>alert" not in text and "</pre><script" not in text
    assert text.count(html.escape(evil)) > 10
    # escaped, the page still has its picture, with the odd cell and the culprit marked
    assert page.find("g", data_culprit="6") and page.find("g", data_diverging="1")
    assert any(evil in a.get("data-group", "") for a in page.find("g"))  # an attribute value, not markup


def test_gpu_sparklines_follow_the_samples_and_leave_gaps() -> None:
    nan = float("nan")
    gpus = (GpuSeries("node-1", 0, 6, (100.0, 99.0, nan, 98.0, 100.0), (0.0, 1.0, nan, 0.0, 2.0)),
            GpuSeries("node-1", 1, 7, (10.0, 50.0, 30.0), (40.0, 45.0, 50.0)))
    page = Page(html_report.render(replace(seed001(), gpus=gpus)))
    rows = page.find("tr", data_rank="6") + page.find("tr", data_rank="7")
    assert len(rows) == 2
    lines = [a["points"] for a in page.find("polyline")]
    # GPU 0: the missing third sample splits each series into two runs of two points
    assert [len(p.split()) for p in lines] == [2, 2, 2, 2, 3, 3]
    ys = [float(p.split(",")[1]) for p in lines[0].split()]
    assert ys[0] < ys[1]  # 100 % is drawn higher than 99 %
    assert "SM busy" in Page(html_report.render(replace(seed001(), gpus=gpus))).text_of.get("gpus", "")
    assert not Page(html_report.render(seed001())).find("section", id="gpus")


def test_healthy_and_huge_diagnoses() -> None:
    ok = Page(html_report.render(healthy()))
    assert ok.find("header", **{"class": "ok"}) and not ok.find("span", data_culprit="0")
    assert not ok.find("g", data_diverging="1")
    big = huge()
    text = html_report.render(big)
    page = Page(text)
    assert page.find("g", data_culprit="512") and page.find("span", data_culprit="512")
    # at most MAX_ROWS ranks per picture, the culprit among them, the rest counted
    count_rows = [a for a in page.find("g") if a.get("class", "").startswith("row") and "data-rank" in a]
    assert len(count_rows) <= 2 * html_report.MAX_ROWS
    assert "more ranks not shown" in text
    assert len(text) < 2_000_000


def test_cli_html_format_writes_the_same_page(tmp_path: Path, real_seed001: Diagnosis) -> None:
    out = render_text(real_seed001, "html")
    assert out.startswith("<!doctype html>") and out == html_report.render(real_seed001)


def test_fallback_picture_without_analysis_windows() -> None:
    """Diagnoses built without alignment windows (hand-built, or older analysis) still get a picture."""
    d = seed001()
    assert not d.alignment
    page = Page(html_report.render(d))
    # the mismatch's own ops first, then the communicators the findings name, each member at its last call
    assert [a["data-group"] for a in page.find("g", **{"class": "panel"})] == ["tp:1", "dp:2", "tp:0"]
    diverging = {(a["data-rank"], a["data-op"]) for a in page.find("g", data_diverging="1")}
    assert ("6", "all_gather") in diverging  # the culprit's all_gatherv among all_reduces
    assert {r for r, _ in diverging} == {"6", "0"}  # and rank 0, stuck one call behind its tp:0 peers
    arrows = {(a["data-from"], a["data-to"]) for a in page.find("path") if "data-from" in a}
    assert arrows == {(str(r), "6") for r in (0, 1, 2, 3, 4, 5, 7)}  # every waiter has a row now
    # the swap reads against rank 6's tp peers: 17 short on dp, 17 long on tp
    bars = {(a["data-rank"], a["data-family"]): float(a["data-delta"]) for a in page.find("g") if "data-family" in a}
    assert bars[("6", "dp")] == -17 and bars[("6", "tp")] == 17
    assert all(abs(v) <= 1 for (r, _), v in bars.items() if r != "6")


def test_call_count_peers_are_the_family_that_isolates_the_odd_rank() -> None:
    """Peers are the members of one family's communicator; the family whose peers agree wins over the median."""
    family, deltas = html_report.count_deltas(seed001())
    assert family == "tp"
    assert {r for v in deltas.values() for r, x in v.items() if abs(x) > 1} == {6}
    # against the whole family's median every rank would look off (dp:i pairs ranks of different tp groups)
    dp = html_report.family_counts(seed001())["dp"]
    import statistics
    assert all(n != statistics.median(dp.values()) for n in dp.values())


def test_op_colours_by_type() -> None:
    assert html_report.op_class("all_gatherv")[0] == "all_gather"
    assert html_report.op_class("reduce_scatter_tensor")[0] == "reduce_scatter"
    assert html_report.op_class("_allgather_base")[0] == "all_gather"
    assert html_report.op_class("irecv")[0] == "send/recv"
    assert html_report.op_class("weird")[0] == "other"
    assert len({html_report.op_class(o)[1] for o in ("all_reduce", "all_gather", "broadcast", "barrier")}) == 4
