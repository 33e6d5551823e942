"""The batch review digest as one printable HTML page (the export quality files or prints).

Pure string building: every value from an event is escaped, styles are inline in the page and
nothing is loaded from anywhere, so the file opens offline and prints the same everywhere
(print to PDF from the browser for a PDF record).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from html import escape

from atmpnet.rules.digest import BatchDigest

_STYLE = """
body { font: 11pt/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #111; margin: 2em; }
h1 { font-size: 16pt; margin: 0 0 .2em; } h2 { font-size: 12.5pt; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; width: 100%; margin: .3em 0; }
th, td { border: 1px solid #bbb; padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: #eee; } td.ids { font: 8pt/1.3 ui-monospace, monospace; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; margin: .4em 0; }
dt { font-weight: 600; } dd { margin: 0; }
.verdict { padding: .5em .8em; border: 2px solid; font-weight: 700; margin: .8em 0; }
.verdict.clean { border-color: #1a7f37; color: #1a7f37; }
.verdict.review { border-color: #b35900; color: #b35900; }
.sev-CRITICAL { color: #b00020; font-weight: 700; } .sev-MAJOR { color: #b35900; font-weight: 600; }
.none { color: #555; font-style: italic; } footer { margin-top: 2em; font-size: 8.5pt; color: #555; }
@media print { body { margin: 0; } tr { break-inside: avoid; } h2 { break-after: avoid; } }
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _t(value: datetime | None) -> str:
    return _e(f"{value:%Y-%m-%d %H:%M:%S} UTC") if value else '<span class="none">not received</span>'


def _d(value: timedelta | None) -> str:
    if value is None:
        return ""
    minutes = round(value.total_seconds() / 60)
    return _e(f"{minutes // 60} h {minutes % 60:02d} min")


def _ids(ids: Iterable[str]) -> str:
    return "<br>".join(_e(i) for i in ids)


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="none">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(html_content: str, cls: str | None = None) -> str:
    return f'<td class="{_e(cls)}">{html_content}</td>' if cls else f"<td>{html_content}</td>"


def render_digest_html(digest: BatchDigest, *, generated_at: datetime | None = None) -> str:
    """The digest as a complete, self-contained, printable HTML document."""
    clean = not digest.exceptions
    facts = [
        ("Batch", _e(digest.batch_id)),
        ("Product", _e(digest.product_code)),
        ("Site", _e(digest.site_id)),
        ("Module / lane", _e(f"{digest.module_id or '?'} / lane {digest.lane or '?'}")),
        ("Status", _e(digest.status)),
        ("Started", _t(digest.started_at)),
        ("Ended", _t(digest.ended_at) if digest.ended_at else '<span class="none">not ended</span>'),
    ]
    steps = _table(
        ["Step", "Attempt", "Module / lane", "Started", "Ended", "Duration", "Outcome", "Performed by"],
        [
            [
                _td(_e(s.step)),
                _td(_e(s.attempt)),
                _td(_e(f"{s.module_id} / {s.lane}")),
                _td(_t(s.started_at)),
                _td(_t(s.ended_at) if s.outcome else '<span class="none">not ended</span>'),
                _td(_d(s.duration)),
                _td(
                    _e(s.outcome or "in progress")
                    + (f"<br>{_e(s.failure_reason)}" if s.failure_reason else "")
                ),
                _td(_e(", ".join(s.performed_by))),
            ]
            for s in digest.steps
        ],
        "No step events received for this batch.",
    )
    exceptions = _table(
        ["#", "Kind", "Severity", "When", "What", "Event ids"],
        [
            [
                _td(str(i)),
                _td(_e(x.kind)),
                _td(_e(x.severity), f"sev-{x.severity}"),
                _td(_t(x.at)),
                _td(_e(x.summary)),
                _td(_ids(x.event_ids), "ids"),
            ]
            for i, x in enumerate(digest.exceptions, start=1)
        ],
        "No exceptions.",
    )
    deviations = _table(
        ["Deviation", "Severity", "Class", "Status", "Step", "Raised", "Closed", "Description", "Resolution"],
        [
            [
                _td(_e(d.deviation_id)),
                _td(_e(d.severity), f"sev-{d.severity}"),
                _td(_e(d.deviation_class)),
                _td(_e(d.status)),
                _td(_e(d.step)),
                _td(_t(d.raised_at)),
                _td(_t(d.closed_at) if d.closed_at else '<span class="none">open</span>'),
                _td(_e(d.description)),
                _td(_e(d.resolution)),
            ]
            for d in digest.deviations
        ],
        "No deviations.",
    )
    drift = _table(
        ["Module", "Drift opened", "Drift closed", "Steps run while drifted"],
        [
            [
                _td(_e(d.module_id)),
                _td(_t(d.opened_at)),
                _td(_t(d.closed_at) if d.closed_at else '<span class="none">still drifted</span>'),
                _td(_e(", ".join(f"{step} (attempt {attempt})" for step, attempt in d.steps))),
            ]
            for d in digest.drift
        ],
        "No configuration drift in force during the batch's steps.",
    )
    findings = _table(
        ["Finding", "Kind", "Severity", "Where", "What", "Evidence (event ids)"],
        [
            [
                _td(_e(f.finding_id)),
                _td(_e(f.kind)),
                _td(_e(f.severity), f"sev-{f.severity}"),
                _td(_e(f.module_id or f.stream) + (f" lane {_e(f.lane)}" if f.lane else "")),
                _td(_e(f.message)),
                _td(_ids(f.evidence), "ids"),
            ]
            for f in digest.findings
        ],
        "No data-integrity findings.",
    )
    generated = f"Generated {_t(generated_at)}. " if generated_at else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>Batch review digest {_e(digest.batch_id)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Batch review digest: {_e(digest.batch_id)}</h1>"
        "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
        f'<div class="verdict {"clean" if clean else "review"}">Verdict: {_e(digest.verdict)}</div>'
        f"<h2>Exceptions</h2>{exceptions}"
        f"<h2>Steps</h2>{steps}"
        f"<h2>Deviations</h2>{deviations}"
        f"<h2>Configuration drift</h2>{drift}"
        f"<h2>Data integrity</h2>{findings}"
        f"<footer>{generated}Review by exception: every exception above needs a reviewer's "
        "disposition before release. Event ids trace each line to the stored events.</footer>"
        "</body></html>\n"
    )
