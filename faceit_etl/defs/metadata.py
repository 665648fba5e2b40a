"""What the UI shows of a frame: its column schema (with the rules that judged it) and a Markdown preview."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pandera.pandas as pa

PREVIEW_ROWS = 10


def column_schema(frame: pd.DataFrame, descriptions: dict[str, str] | None = None) -> dg.TableSchema:
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=str(name), type=str(dtype), description=descriptions.get(str(name)))
            for name, dtype in frame.dtypes.items()
        ]
    )


def rules_schema(*schemas: pa.DataFrameSchema, unique: dict[str, str] | None = None) -> dg.TableSchema:
    """The columns the schemas judge, each with its rules as the UI's column constraints: nullable,
    unique (pandera's flag, or a column in `unique`, which a check keeps to its first entry), and each
    check's own text (its name and bounds, then the reason a reject shows)."""
    unique = unique or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=name,
                type=str(column.dtype),
                description=schema.name,
                constraints=dg.TableColumnConstraints(
                    nullable=column.nullable,
                    unique=column.unique or name in unique,
                    other=[_check_text(check) for check in column.checks],
                ),
            )
            for schema in schemas
            for name, column in schema.columns.items()
        ]
    )


def _check_text(check: pa.Check) -> str:
    bounds = ", ".join(f"{key}={value!r}" for key, value in (check.statistics or {}).items() if value is not None)
    named = check.name if check.name and check.name != "<lambda>" else ""
    rule = f"{named}({bounds})" if named and bounds else named
    return f"{rule}: {check.error}" if rule else str(check.error)


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
