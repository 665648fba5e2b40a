-- Run once by the postgres image on an empty volume: psql as the superuser, connected to the bot's
-- database (POSTGRES_DB). Two login roles, neither superuser nor able to create databases or roles:
--   dagster     owns the database "dagster" (Dagster's runs, event logs, schedules) and may not
--               connect to the bot's database;
--   faceit_etl  may connect to the bot's database only, and create there the type and tables it
--               loads in the existing schema public (it then owns them, so it can truncate, re-key
--               and roll them back); it may create no schema.
-- Neither may connect to the databases "postgres" and "template1". The superuser, who may one day
-- query what these roles own, is given a search_path and a setting under which nothing they
-- created runs as the superuser.
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
REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC;
-- CREATE on the database only because the migration runs CREATE SCHEMA IF NOT EXISTS on its target
-- schema, which PostgreSQL refuses without it even when the schema exists. Creating a schema is
-- refused to every role but a superuser by the event trigger below: a schema named after the
-- superuser (first in its default search_path) could hold a view or function the superuser would
-- run with its own rights. A target schema other than public is created by the superuser.
GRANT CONNECT, TEMPORARY, CREATE ON DATABASE :"bot_database" TO faceit_etl;
GRANT USAGE, CREATE ON SCHEMA public TO faceit_etl;

CREATE FUNCTION public.faceit_refuse_new_schema() RETURNS event_trigger LANGUAGE plpgsql
    SET search_path = pg_catalog AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() WHERE object_type = 'schema')
       AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'only a superuser may create a schema in this database';
    END IF;
END $$;
REVOKE ALL ON FUNCTION public.faceit_refuse_new_schema() FROM PUBLIC;
CREATE EVENT TRIGGER faceit_refuse_new_schema ON ddl_command_end WHEN TAG IN ('CREATE SCHEMA')
    EXECUTE FUNCTION public.faceit_refuse_new_schema();

-- The roles own tables, views, functions and operators the superuser may query: it resolves names in
-- pg_catalog only (write public.users) and expands no view but the system's, so no object they
-- created can run code as the superuser.
ALTER ROLE CURRENT_USER SET search_path = pg_catalog;
ALTER ROLE CURRENT_USER SET restrict_nonsystem_relation_kind = 'view';
