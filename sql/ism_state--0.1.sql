/* ism_state--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ism_state" to load this file. \quit

CREATE FUNCTION pg_stat_ism_worker(
    OUT pid integer,
    OUT role text,
    OUT database text,
    OUT state text,
    OUT nats_state text,
    OUT nats_server text,
    OUT connected_since timestamptz,
    OUT reconnects bigint,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT started_at timestamptz,
    OUT last_activity_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ism_stat_worker'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION pg_stat_ism_worker() IS
'One row per ism_state worker: lifecycle state, NATS connection and last error';

CREATE VIEW pg_stat_ism_worker AS
    SELECT * FROM pg_stat_ism_worker();

COMMENT ON VIEW pg_stat_ism_worker IS
'Health of the ism_state background workers';

-- Monitoring is for superusers and members of pg_monitor.
REVOKE ALL ON FUNCTION pg_stat_ism_worker() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_stat_ism_worker() TO pg_monitor;
GRANT SELECT ON pg_stat_ism_worker TO pg_monitor;
GRANT USAGE ON SCHEMA ism_state TO pg_monitor;
