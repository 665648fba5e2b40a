"""The bot's data file: its layouts, read into a list of user entries."""

from faceit_etl.source.reader import SourceData, SourceError, parse_source, read_source

__all__ = ["SourceData", "SourceError", "parse_source", "read_source"]
