"""The HTML report of a quantize search (`quantize --report-html`, `ristretto report`) and
`quantize -q`: every section there, pictures inline, nothing loaded from elsewhere."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from conftest import run_cli
from test_quantize import TINY_BATCHES, tiny  # noqa: F401  (the tiny net fixture)

SECTIONS = ("summary", "scores", "pareto", "ranges", "cost")


class Page(HTMLParser):
    """What the tests look at: sections (with the tags inside each), references, scripts."""

    def __init__(self):
        super().__init__()
        self.stack, self.sections, self.refs, self.tags = [], {}, [], {}
        self.current = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = {}
        elif self.current:
            self.sections[self.current][tag] = self.sections[self.current].get(tag, 0) + 1
        for k in ("src", "href", "xlink:href"):
            if a.get(k):
                self.refs.append(a[k])

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None


def parse(text: str) -> Page:
    p = Page()
    p.feed(text)
    p.close()
    return p


@pytest.fixture(scope="module")
def quantized(tiny):  # noqa: F811
    """One quiet command-line search of the tiny net with both reports."""
    from ristretto_cli.cli import run

    model, weights, d = tiny
    rep, page = d / "hr.json", d / "hr.html"
    status = run(["quantize", "-q", "--model", model, "--weights", weights, "--model_quantized",
                  str(d / "hr.prototxt"), "--trimming_mode", "dynamic_fixed_point", "--iterations",
                  str(TINY_BATCHES), "--report", str(rep), "--report-html", str(page)])
    assert status == 0
    return rep, page, d


def test_html_report_has_every_section_with_tables_and_pictures(quantized):
    rep, page, _ = quantized
    text = page.read_text(encoding="utf-8")
    p = parse(text)
    assert tuple(p.sections) == SECTIONS
    for sid in ("scores", "pareto", "ranges"):
        assert p.sections[sid].get("svg") == 1 and p.sections[sid].get("table"), sid
    assert p.sections["cost"].get("table") == 2 and p.sections["summary"].get("table") == 1
    # self-contained: no script, no file or URL loaded, only in-page fragments (and the empty icon)
    assert "script" not in p.tags and "img" not in p.tags
    assert all(r.startswith("#") or r == "data:," for r in p.refs), [r for r in p.refs if not r.startswith("#")]
    ids = re.findall(r' id="([^"]+)"', text)
    assert len(ids) == len(set(ids))                       # figures' ids do not collide
    assert set(re.findall(r'(?:href="#|url\(#)([^")]+)', text)) <= set(ids)
    # what the search measured is on the page
    data = json.loads(rep.read_text())
    assert data["final"]["label"] in text
    for layer in data["layers"]:
        assert f"<td>{layer['name']}</td>" in text
    assert '<tr class="chosen">' in text and "Horowitz" in text


def test_report_json_carries_the_cost_of_every_configuration(quantized):
    rep, _, _ = quantized
    data = json.loads(rep.read_text())
    cost = data["cost"]
    assert [e["label"] for e in cost["evaluations"]] == [e["label"] for e in data["evaluations"]]
    assert cost["float"]["weight_bits"] == data["parameter_memory"]["bits_before"]
    assert cost["final"]["total"]["weight_bits"] == data["parameter_memory"]["bits_after"]
    assert cost["final"]["total"]["bitops"] < cost["float"]["bitops"]
    fl = next(e for e in cost["evaluations"] if e["label"] == data["final"]["label"])
    assert fl["score"] == data["final"]["score"]


def test_report_command_renders_the_same_page(quantized, capsys):
    rep, page, d = quantized
    out = d / "again.html"
    status, shown, err = run_cli(["report", rep, "-o", out], capsys)
    assert status == 0 and f"wrote {out}" in err
    assert out.read_text(encoding="utf-8") == page.read_text(encoding="utf-8")   # deterministic
    status, shown, err = run_cli(["report", rep, "-o", "-"], capsys)
    assert status == 0 and shown == page.read_text(encoding="utf-8")


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{ not json", "not valid JSON"),
    ("[1, 2]", "not a quantize report"),
    ('{"baseline": 1.0}', "not a quantize report (no 'candidates'"),
])
def test_report_command_bad_input_is_one_line(tmp_path, capsys, content, message):
    src = tmp_path / "r.json"
    if content is not None:
        src.write_text(content)
    out = tmp_path / "r.html"
    status, _, err = run_cli(["report", src, "-o", out], capsys)
    assert status == 2 and err.startswith(f"ristretto: error: {src}") and message in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("mode", ["minifloat", "integer_power_of_2_weights"])
def test_other_modes_render(tiny, mode):  # noqa: F811
    from ristretto_cli.quantize.procedure import quantize
    from ristretto_cli.report import render_html

    model, weights, d = tiny
    outcome = quantize(model, weights, str(d / f"{mode}_r.prototxt"), mode, iterations=TINY_BATCHES)
    p = parse(render_html(json.loads(json.dumps(outcome.report))))
    assert tuple(p.sections) == SECTIONS and p.sections["ranges"].get("svg") == 1


def test_quiet_prints_nothing_and_still_writes_the_report(tiny, capfd):  # noqa: F811
    from ristretto_cli.cli import run

    model, weights, d = tiny
    rep = d / "quiet.json"
    status = run(["quantize", "--quiet", "--model", model, "--weights", weights, "--model_quantized",
                  str(d / "quiet.prototxt"), "--trimming_mode", "integer_power_of_2_weights", "--iterations",
                  str(TINY_BATCHES), "--report", str(rep)])
    captured = capfd.readouterr()
    assert status == 0 and captured.out == "" and captured.err == ""
    assert json.loads(rep.read_text())["trimming_mode"] == "integer_power_of_2_weights"


def test_report_html_must_be_a_file_of_its_own(tiny, capsys):  # noqa: F811
    model, weights, d = tiny
    for html_out, rep in (("-", None), (str(d / "same.json"), str(d / "same.json"))):
        args = ["quantize", "--model", model, "--weights", weights, "--model_quantized", d / "x.prototxt",
                "--trimming_mode", "minifloat", "--report-html", html_out] + (["--report", rep] if rep else [])
        status, _, err = run_cli(args, capsys)
        assert status == 2 and "--report-html" in err and err.count("\n") == 1
    assert not (d / "x.prototxt").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (optional)")
def test_a_headless_browser_loads_the_page_without_console_errors(quantized):
    _, page, _ = quantized
    url = page.resolve().as_uri()
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--enable-logging=stderr", "--v=1", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
    assert console == []
    loads = set(re.findall(r"FileURLLoader::Start: (\S+)", proc.stderr))
    assert loads <= {url}, loads                                  # nothing but the page itself
    dom = parse(proc.stdout)
    assert tuple(dom.sections) == SECTIONS
    assert all(dom.sections[s].get("svg") == 1 for s in ("scores", "pareto", "ranges"))
