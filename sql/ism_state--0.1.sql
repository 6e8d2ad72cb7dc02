/* ism_state--0.1.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION ism_state" to load this file. \quit

CREATE FUNCTION pg_stat_ism_worker(
    OUT worker integer,
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
    OUT last_activity_at timestamptz,
    OUT in_flight integer,
    OUT activity text)
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

CREATE FUNCTION pg_stat_ism_routes(
    OUT selector text,
    OUT received bigint,
    OUT routed bigint,
    OUT published bigint,
    OUT acked bigint,
    OUT nacked bigint,
    OUT terminated bigint,
    OUT failed bigint,
    OUT bytes_in bigint,
    OUT bytes_out bigint,
    OUT redeliveries bigint,
    OUT last_message_at timestamptz,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ism_stat_routes'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

CREATE VIEW pg_stat_ism_routes AS
    SELECT * FROM pg_stat_ism_routes();

COMMENT ON VIEW pg_stat_ism_routes IS
'Per route: messages consumed, routed, published and settled by the ism_state workers';

CREATE FUNCTION pg_stat_ism_tables(
    OUT worker integer,
    OUT table_name text,
    OUT records bigint,
    OUT batches bigint,
    OUT ddl_changes bigint,
    OUT flush_time_total double precision,
    OUT flush_time_max double precision,
    OUT pending_records bigint,
    OUT pending_bytes bigint,
    OUT oldest_pending_age interval,
    OUT last_flush_at timestamptz,
    OUT dead_letters bigint,
    OUT failed_flushes bigint,
    OUT last_error text,
    OUT last_error_at timestamptz,
    OUT stats_reset timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'ism_stat_tables'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

CREATE VIEW pg_stat_ism_tables AS
    SELECT * FROM pg_stat_ism_tables();

COMMENT ON VIEW pg_stat_ism_tables IS
'Per writer and table: records and batches written, flush times, what is pending';

CREATE FUNCTION pg_stat_ism_reset() RETURNS void
AS 'MODULE_PATHNAME', 'ism_stat_reset'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION pg_stat_ism_reset_route(selector text) RETURNS boolean
AS 'MODULE_PATHNAME', 'ism_stat_reset_route'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION pg_stat_ism_reset_table(table_name text) RETURNS boolean
AS 'MODULE_PATHNAME', 'ism_stat_reset_table'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

REVOKE ALL ON FUNCTION pg_stat_ism_routes() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_stat_ism_tables() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pg_stat_ism_routes() TO pg_monitor;
GRANT EXECUTE ON FUNCTION pg_stat_ism_tables() TO pg_monitor;
GRANT SELECT ON pg_stat_ism_routes, pg_stat_ism_tables TO pg_monitor;
-- resetting is for superusers (and whom they grant it to), as pg_stat_statements_reset
REVOKE ALL ON FUNCTION pg_stat_ism_reset() FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_stat_ism_reset_route(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION pg_stat_ism_reset_table(text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Route catalogue: one row per selector, as in the ISM routing YAML
-- (messageConfig.routes[]).  Defaults are the upstream loaders' defaults.
-- ---------------------------------------------------------------------------
CREATE TABLE route (
    selector    text PRIMARY KEY
        CONSTRAINT route_selector_valid
        CHECK (selector <> '' AND length(selector) <= 1024),
    -- JetStream stream name; NATS refuses '.', '*', '>' and white space
    name        text NOT NULL
        CONSTRAINT route_name_valid
        CHECK (name ~ '^[^.*>[:space:]]+$' AND length(name) <= 255),
    -- base subject: dot-separated non-empty tokens, no wildcards
    subject     text NOT NULL
        CONSTRAINT route_subject_valid
        CHECK (subject ~ '^[^.*>[:space:]]+(\.[^.*>[:space:]]+)*$'),
    url         text,           -- NULL: the worker's ism_state.nats_url
    queue       text
        CONSTRAINT route_queue_valid
        CHECK (queue ~ '^[^.*>[:space:]]+$'),
    mode        text NOT NULL DEFAULT 'push'
        CONSTRAINT route_mode_valid
        CHECK (mode IN ('push', 'pull', 'request-reply')),
    ack_wait    integer NOT NULL DEFAULT 90         -- seconds
        CONSTRAINT route_ack_wait_range CHECK (ack_wait BETWEEN 1 AND 86400),
    batch_size  integer NOT NULL DEFAULT 1
        CONSTRAINT route_batch_size_range CHECK (batch_size BETWEEN 1 AND 10000),
    max_ack_pending integer                         -- NULL: server default
        CONSTRAINT route_max_ack_pending_range
        CHECK (max_ack_pending BETWEEN 1 AND 1000000),
    jetstream_enabled boolean NOT NULL DEFAULT true,
    concurrent_enabled boolean NOT NULL DEFAULT false,
    concurrent_max_workers integer NOT NULL DEFAULT 10
        CONSTRAINT route_concurrent_max_workers_range
        CHECK (concurrent_max_workers BETWEEN 1 AND 1000),
    concurrent_priority_enabled boolean NOT NULL DEFAULT false,
    concurrent_max_workers_high integer NOT NULL DEFAULT 5
        CONSTRAINT route_concurrent_max_workers_high_range
        CHECK (concurrent_max_workers_high BETWEEN 1 AND 1000),
    mirror      text
        CONSTRAINT route_mirror_valid
        CHECK (mirror ~ '^[^.*>[:space:]]+$'),
    -- keys neither upstream loader knows, kept as they were
    extra       jsonb NOT NULL DEFAULT '{}'
        CONSTRAINT route_extra_is_object CHECK (jsonb_typeof(extra) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE route IS
'ISM NATS routes by selector (messageConfig.routes[] of the routing YAML)';

SELECT pg_catalog.pg_extension_config_dump('ism_state.route', '');

-- Wakes the workers when a change they follow commits.
CREATE FUNCTION notify_workers() RETURNS trigger
AS 'MODULE_PATHNAME', 'ism_notify_workers'
LANGUAGE C;

-- Running workers reload their route cache when a change commits.
CREATE TRIGGER route_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON route
    FOR EACH STATEMENT EXECUTE FUNCTION notify_workers('routes');

CREATE FUNCTION load_routes(yaml text, replace boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'ism_load_routes'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION load_routes(text, boolean) IS
'Upsert the routes of an ISM routing YAML; with replace, delete the others. All or nothing.';

CREATE FUNCTION load_routes_file(path text, replace boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'ism_load_routes_file'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION load_routes_file(text, boolean) IS
'load_routes() on a file on the database server';

CREATE FUNCTION add_route(selector text, subject text, name text DEFAULT NULL,
                          url text DEFAULT NULL, options jsonb DEFAULT '{}')
RETURNS route
AS 'MODULE_PATHNAME', 'ism_add_route'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION add_route(text, text, text, text, jsonb) IS
'Add or replace one route; options holds the other routing YAML keys';

CREATE FUNCTION remove_route(selector text) RETURNS boolean
LANGUAGE sql STRICT VOLATILE
BEGIN ATOMIC
    WITH gone AS (DELETE FROM ism_state.route r WHERE r.selector = remove_route.selector
                  RETURNING 1)
    SELECT count(*) > 0 FROM gone;
END;

COMMENT ON FUNCTION remove_route(text) IS
'Delete the route with this exact selector; false if there was none';

-- Every value is written as JSON, which YAML reads as it is: no YAML
-- quoting rules to get right, and each value keeps its type.  NULL columns
-- are left out (a NULL line makes the whole concatenation NULL).
CREATE FUNCTION export_routes() RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT E'messageConfig:\n  routes:' ||
           CASE WHEN count(*) = 0 THEN E' []\n' ELSE E'\n' || string_agg(
               '    - selector: ' || to_json(r.selector) || E'\n' ||
               '      name: ' || to_json(r.name) || E'\n' ||
               '      subject: ' || to_json(r.subject) || E'\n' ||
               coalesce('      url: ' || to_json(r.url) || E'\n', '') ||
               coalesce('      queue: ' || to_json(r.queue) || E'\n', '') ||
               '      mode: ' || to_json(r.mode) || E'\n' ||
               '      ack_wait: ' || r.ack_wait || E'\n' ||
               '      batch_size: ' || r.batch_size || E'\n' ||
               coalesce('      max_ack_pending: ' || r.max_ack_pending || E'\n', '') ||
               '      jetstream_enabled: ' || to_json(r.jetstream_enabled) || E'\n' ||
               '      concurrent_enabled: ' || to_json(r.concurrent_enabled) || E'\n' ||
               '      concurrent_max_workers: ' || r.concurrent_max_workers || E'\n' ||
               '      concurrent_priority_enabled: ' || to_json(r.concurrent_priority_enabled) || E'\n' ||
               '      concurrent_max_workers_high: ' || r.concurrent_max_workers_high || E'\n' ||
               coalesce('      mirror: ' || to_json(r.mirror) || E'\n', '') ||
               (SELECT coalesce(string_agg('      ' || to_json(e.key) || ': ' || e.value || E'\n',
                                           '' ORDER BY e.key), '')
                  FROM jsonb_each(r.extra) AS e),
               '' ORDER BY r.selector) END
      FROM ism_state.route AS r;
END;

COMMENT ON FUNCTION export_routes() IS
'The route catalogue as an ISM routing YAML that load_routes() reads back';

CREATE FUNCTION resolve_route(selector text) RETURNS route
AS 'MODULE_PATHNAME', 'ism_resolve_route'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION resolve_route(text) IS
'The route for a selector: exact match, else the one trailing-/* prefix match';

REVOKE ALL ON FUNCTION load_routes(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION load_routes_file(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION add_route(text, text, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION remove_route(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION export_routes() FROM PUBLIC;
REVOKE ALL ON FUNCTION resolve_route(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notify_workers() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Messages given up on: kept with their error, never silently dropped.
-- ---------------------------------------------------------------------------
CREATE TABLE dead_letter (
    id          bigserial PRIMARY KEY,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    worker      text NOT NULL,          -- router or writer
    subject     text NOT NULL,          -- where the message arrived
    stream      text NOT NULL,
    stream_seq  bigint NOT NULL,
    deliveries  bigint NOT NULL,
    route_id    text,                   -- the message's route_id, if it had one
    payload     bytea NOT NULL,         -- the message as received
    error       text NOT NULL,
    replay_requested_at timestamptz     -- set by replay_dead_letter()
);

COMMENT ON TABLE dead_letter IS
'Inbound messages ism_state could not handle, with the reason';

CREATE INDEX dead_letter_failed_at ON dead_letter (failed_at);

SELECT pg_catalog.pg_extension_config_dump('ism_state.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('ism_state.dead_letter_id_seq', '');

GRANT SELECT ON dead_letter TO pg_monitor;

CREATE INDEX dead_letter_replay ON dead_letter (id)
    WHERE replay_requested_at IS NOT NULL;

-- The router republishes what is marked, to the subject it arrived on,
-- and deletes the rows once JetStream has them: a replayed message that
-- fails again comes back as a new row.
CREATE TRIGGER replay_requested
    AFTER UPDATE OF replay_requested_at ON dead_letter
    FOR EACH STATEMENT EXECUTE FUNCTION notify_workers('replays');

CREATE FUNCTION replay_dead_letter(id bigint) RETURNS boolean
LANGUAGE sql STRICT VOLATILE
BEGIN ATOMIC
    WITH marked AS (
        UPDATE ism_state.dead_letter d SET replay_requested_at = now()
         WHERE d.id = replay_dead_letter.id RETURNING 1)
    SELECT count(*) > 0 FROM marked;
END;

COMMENT ON FUNCTION replay_dead_letter(bigint) IS
'Publish a dead letter again to the subject it came on; false if there is no such row';

CREATE FUNCTION replay_dead_letters(since timestamptz DEFAULT '-infinity',
                                    worker text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    WITH marked AS (
        UPDATE ism_state.dead_letter d SET replay_requested_at = now()
         WHERE d.failed_at >= replay_dead_letters.since
           AND (replay_dead_letters.worker IS NULL OR d.worker = replay_dead_letters.worker)
        RETURNING 1)
    SELECT count(*) FROM marked;
END;

COMMENT ON FUNCTION replay_dead_letters(timestamptz, text) IS
'Replay every dead letter since a time (of one worker kind); returns how many';

REVOKE ALL ON FUNCTION replay_dead_letter(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION replay_dead_letters(timestamptz, text) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Where the state-tables writer writes: names as upstream, mapped where
-- PostgreSQL could not take them as they are (see the README).
-- ---------------------------------------------------------------------------
CREATE FUNCTION table_name(processor_id text, table_name text) RETURNS text
AS 'MODULE_PATHNAME', 'ism_sql_table_name'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION table_name(text, text) IS
'The table a state-tables processor writes to: <processor_id>_<tableName>, or <processor_id>';

CREATE FUNCTION column_name(key text) RETURNS text
AS 'MODULE_PATHNAME', 'ism_sql_column_name'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION column_name(text) IS
'The column a record key is written to';

GRANT EXECUTE ON FUNCTION table_name(text, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION column_name(text) TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Exactly-once writes: the messages whose records a committed flush wrote.
-- A redelivered message found here is acknowledged without being written
-- again.  Not dumped: stream sequences belong to one NATS deployment.
-- ---------------------------------------------------------------------------
CREATE TABLE applied (
    stream      text NOT NULL,
    stream_seq  bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, stream_seq)
);

COMMENT ON TABLE applied IS
'JetStream messages whose records the state-tables writer has committed';
