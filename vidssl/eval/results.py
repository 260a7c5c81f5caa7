"""Result files: one JSON per evaluation (metrics and the full protocol) and a markdown table
that every evaluation appends a row to."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_MD = "results.md"
COLUMNS = ("protocol", "encoder", "method", "data", "metric", "value", "details", "file")


def write_result(out: str | Path, kind: str, encoder_name: str, result: dict[str, Any],
                 headline: dict[str, float], summary: str) -> Path:
    """``<out>/<kind>-<encoder>-<time>.json`` plus a row per headline metric in ``results.md``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in encoder_name)
    path = out / f"{kind}-{safe}-{stamp}.json"
    n = 1
    while path.exists():
        path = out / f"{kind}-{safe}-{stamp}-{n}.json"
        n += 1
    payload = {"kind": kind, "encoder_name": encoder_name, "headline": headline, "summary": summary,
               "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    table = out / RESULTS_MD
    if not table.exists():
        table.write_text("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n")
    with table.open("a") as fh:
        for metric, value in headline.items():
            fh.write(f"| {kind} | {encoder_name} | {result.get('encoder', {}).get('method', '')} | "
                     f"{result.get('data', '')} | {metric} | {100 * value:.1f} | {summary} | {path.name} |\n")
    return path


def load_results(dirs: list[str | Path]) -> list[dict[str, Any]]:
    rows = []
    for d in dirs:
        for f in sorted(Path(d).rglob("*.json")):
            try:
                data = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and "kind" in data and "headline" in data:
                data["_file"] = str(f)
                rows.append(data)
    return rows


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """One row per (encoder, data), one column per (protocol, metric); values in %."""
    cols: list[str] = []
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        key = (r["encoder_name"], r.get("data", ""))
        for metric, value in r["headline"].items():
            col = f"{r['kind']} {metric}"
            if col not in cols:
                cols.append(col)
            table.setdefault(key, {})[col] = value
    lines = ["| encoder | data | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for (enc, data), vals in table.items():
        cells = [f"{100 * vals[c]:.1f}" if c in vals else "" for c in cols]
        lines.append(f"| {enc} | {data} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
