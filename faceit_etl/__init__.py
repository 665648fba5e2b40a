"""faceit-etl: move a FACEIT Telegram bot's JSON data file into PostgreSQL, validated and reversible."""
