"""Reading the sections of a job's report.html back (``motionfleet report``), and what the job
folder itself says they should show, read without the report's code."""

import html
import json
import re
from pathlib import Path


def section(page: str, name: str) -> str:
    """The ``<section id=NAME>`` of the page (AssertionError naming it when the page has none)."""
    found = re.search(rf"<section id='{name}'>(.*?)</section>", page, re.S)
    assert found, f"the page has no {name} section"
    return found.group(1)


def stage_bars(page: str) -> list[tuple[str, float, str]]:
    """(label, bar width in px, value text) of each bar of the stage chart, top to bottom."""
    bars = re.findall(r'<text[^>]*>([^<]*)</text><rect[^>]*width="([0-9.]+)"[^>]*/><text[^>]*>([^<]*)</text>',
                      section(page, "stages"))
    return [(html.unescape(label), float(width), html.unescape(value)) for label, width, value in bars]


def committed_batches(job: Path) -> int:
    """The batch records in the job's commit records, read from the JSON files, after checking that
    each holds when it began and its seconds, inside the run that committed it."""
    count = 0
    for record in (json.loads(f.read_text()) for f in (job / "commits").glob("*.json")):
        for batch in record["summary"]["timings"]["batches"]:
            assert record["started"] <= batch["start"] < batch["start"] + batch["seconds"] <= record["committed"], batch
            count += 1
    return count


def drawn_batches(page: str) -> int:
    """The points of the batch plot, whose x axis is the time since the first batch began."""
    plot = section(page, "batches")
    assert "seconds since the first batch began" in plot
    return len(re.findall(r'<circle class="batch"', plot))
