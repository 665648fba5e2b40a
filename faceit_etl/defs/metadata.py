"""What the UI shows of a frame: its column schema and a Markdown preview."""

from __future__ import annotations

import dagster as dg
import pandas as pd

PREVIEW_ROWS = 10


def column_schema(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(name), type=str(dtype), description=descriptions.get(str(name)))
            for name, dtype in frame.dtypes.items()
        ]
    )


def preview(frame: pd.DataFrame, rows: int = PREVIEW_ROWS) -> dg.MarkdownMetadataValue:
    if frame.empty:
        return dg.MetadataValue.md("_no rows_")
    shown = frame.head(rows).astype(object).where(frame.head(rows).notna(), None)
    more = f"\n\n_{len(frame) - rows} more rows_" if len(frame) > rows else ""
    return dg.MetadataValue.md(shown.to_markdown(index=False) + more)


def frame_metadata(frame: pd.DataFrame) -> dict:
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(frame),
        "preview": preview(frame),
    }
