-- Dagster's own storage lives in its own database beside the bot's.
CREATE DATABASE dagster;
