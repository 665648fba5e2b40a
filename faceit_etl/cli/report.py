"""The Markdown report of `faceit-etl validate`: counts, distributions, every reject with its reason."""

from __future__ import annotations

import pandas as pd

from faceit_etl.mapping import MappedFrames
from faceit_etl.validation import ValidationOutcome
from faceit_etl.validation.report import reject_rows


def _table(counts: dict, key: str, value: str = "count") -> str:
    rows = [f"| {key} | {value} |", "|---|---|"] + [f"| {k} | {v} |" for k, v in counts.items()]
    return "\n".join(rows)


def _cell(value) -> str:
    text = "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def validation_report(source_name: str, layout: str, outcome: ValidationOutcome, mapped: MappedFrames,
                      target_state: dict | None = None) -> str:
    subs = mapped.subscriptions
    lines = [
        f"# Validation report: {source_name}",
        "",
        f"- layout: {layout}",
        f"- entries read: {outcome.input_count}",
        f"- accepted: {len(outcome.valid)}",
        f"- rejected: {outcome.rejected_count}",
        "",
        "## Distributions (accepted entries)",
        "",
        _table({str(k): int(v) for k, v in subs["tier"].value_counts().sort_index().items()}, "tier"),
        "",
        _table({str(k): int(v) for k, v in mapped.users["language"].value_counts().head(20).items()}, "language"),
        "",
        _table(
            {
                "with a FACEIT account": int(mapped.users["faceit_player_id"].notna().sum()),
                "referred by someone": int(subs["referred_by_user_id"].notna().sum()),
                "holding a referral code": int(subs["referral_code"].notna().sum()),
                "Telegram id above 2^31-1": int((mapped.users["user_id"] > 2**31 - 1).sum()),
            },
            "users",
        ),
        "",
        "## Defaults applied (absent or null in the file)",
        "",
        _table(mapped.defaults_applied, "field", "entries") if mapped.defaults_applied else "none",
        "",
        "## Ignored fields (no column in the target)",
        "",
        _table(outcome.ignored_fields, "field", "entries") if outcome.ignored_fields else "none",
        "",
        "## Rejects",
        "",
    ]
    if outcome.rejects.empty:
        lines.append("none")
    else:
        # Entries counted from 1, as the run page and migrate's output count them.
        lines += ["| entry | user_id | field | value | reason |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['entry']} | {_cell(r['user_id'])} | {_cell(r['field'])} | {_cell(r['value'])} | {_cell(r['reason'])} |"
            for r in reject_rows(outcome.rejects)
        ]
    if target_state is not None:
        lines += ["", "## Target database", ""]
        lines += [f"- {key}: {value}" for key, value in target_state.items()]
    return "\n".join(lines) + "\n"
