-- Run once by the postgres image on an empty volume: psql as the superuser, connected to the bot's
-- database (POSTGRES_DB). Two login roles, neither superuser nor able to create databases or roles:
--   dagster     owns the database "dagster" (Dagster's runs, event logs, schedules) and may not
--               connect to the bot's database;
--   faceit_etl  may connect to the bot's database only, and create there the schema, type and tables
--               it loads (it then owns them, so it can truncate, re-key and roll them back).
-- Their passwords are read from the container's environment, never written in a file.
\set ON_ERROR_STOP on
\getenv dagster_password DAGSTER_DB_PASSWORD
\getenv faceit_etl_password FACEIT_ETL_DB_PASSWORD
\if :{?dagster_password}
\else
\set dagster_password ''
\endif
\if :{?faceit_etl_password}
\else
\set faceit_etl_password ''
\endif
SELECT :'dagster_password' <> '' AS has_dagster_password,
       :'faceit_etl_password' <> '' AS has_faceit_etl_password,
       current_database() AS bot_database \gset
\if :has_dagster_password
\else
DO $$ BEGIN RAISE EXCEPTION 'DAGSTER_DB_PASSWORD is not set: the dagster role needs a password'; END $$;
\endif
\if :has_faceit_etl_password
\else
DO $$ BEGIN RAISE EXCEPTION 'FACEIT_ETL_DB_PASSWORD is not set: the faceit_etl role needs a password'; END $$;
\endif

CREATE ROLE dagster LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'dagster_password';
CREATE ROLE faceit_etl LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'faceit_etl_password';

CREATE DATABASE dagster OWNER dagster;
-- Every role may connect to every database unless told otherwise: only the owner's role may here.
REVOKE ALL ON DATABASE dagster FROM PUBLIC;
REVOKE ALL ON DATABASE :"bot_database" FROM PUBLIC;
-- CREATE on the database: the migration creates its target schema if it is missing.
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE :"bot_database" TO faceit_etl;
GRANT USAGE, CREATE ON SCHEMA public TO faceit_etl;
