-- The least-privilege role for ism_state's workers (ism_state.role).
--
--   psql -v role=ism_worker -v catalog_schema=public -v data_schema=ism_data \
--        -d <ism_state.database> -f scripts/worker-role.sql
--
-- Run as a superuser after CREATE EXTENSION ism_state, then set
-- ism_state.role = '<role>' and ism_state.data_schema = '<data_schema>' and
-- restart the server.  The role gets what the workers do, nothing more:
--   - the extension's own tables: the route table (seeded from the routing
--     file), dead letters, and the writer's record of applied messages;
--   - reading the ISM catalog (processors, their states and state data);
--   - the data schema, which it owns: the writer creates its tables there,
--     so it owns them too.
-- It is not a superuser and has no other attribute: on PostgreSQL 17 and
-- later not even LOGIN (nobody can log in as it: the workers connect with
-- BGWORKER_BYPASS_ROLELOGINCHECK); 15 and 16 require LOGIN of the role a
-- background worker connects as.

\set ON_ERROR_STOP on

SELECT current_setting('server_version_num')::int >= 170000 AS workers_need_no_login \gset
\if :workers_need_no_login
CREATE ROLE :"role" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
\else
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS;
\endif

GRANT USAGE ON SCHEMA ism_state TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ism_state.route TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ism_state.dead_letter TO :"role";
GRANT USAGE ON SEQUENCE ism_state.dead_letter_id_seq TO :"role";
GRANT SELECT, INSERT, DELETE ON ism_state.applied TO :"role";
GRANT SELECT, INSERT, UPDATE, DELETE ON ism_state.applied_msg_id TO :"role";

GRANT USAGE ON SCHEMA :"catalog_schema" TO :"role";
GRANT SELECT ON :"catalog_schema".processor, :"catalog_schema".processor_state,
    :"catalog_schema".state, :"catalog_schema".state_column,
    :"catalog_schema".state_column_data TO :"role";

CREATE SCHEMA IF NOT EXISTS :"data_schema";
ALTER SCHEMA :"data_schema" OWNER TO :"role";
