-- pg_stat_ism_worker, pg_stat_ism_routes, pg_stat_ism_tables: readable by
-- pg_monitor only; the resets by superusers only.

-- the workers start with the server; give them a moment to report
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN (SELECT bool_and(state = 'waiting_for_extension')
                     FROM ism_state.pg_stat_ism_worker);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

SELECT worker, role, database, state, nats_state, pid IS NOT NULL AS running,
       nats_server, connected_since, reconnects, last_error,
       started_at <= now() AS started, last_activity_at >= started_at AS active,
       in_flight
  FROM ism_state.pg_stat_ism_worker ORDER BY worker;

-- the view's pids are the workers pg_stat_activity shows
SELECT a.backend_type, a.state, a.query
  FROM ism_state.pg_stat_ism_worker w
  JOIN pg_stat_activity a USING (pid)
 ORDER BY 1;

SELECT attrelid::regclass, attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid IN ('ism_state.pg_stat_ism_worker'::regclass,
                    'ism_state.pg_stat_ism_routes'::regclass,
                    'ism_state.pg_stat_ism_tables'::regclass) AND attnum > 0
 ORDER BY attrelid, attnum;

-- no traffic here (no NATS server): no rows; the resets work on nothing
SELECT count(*) FROM ism_state.pg_stat_ism_routes;
SELECT count(*) FROM ism_state.pg_stat_ism_tables;
SELECT ism_state.pg_stat_ism_reset();
SELECT ism_state.pg_stat_ism_reset_route('processor/state/router');
SELECT ism_state.pg_stat_ism_reset_table('t');

-- privileges: nobody but pg_monitor members and superusers
CREATE ROLE regress_ism_nobody;
CREATE ROLE regress_ism_monitor IN ROLE pg_monitor;

SET ROLE regress_ism_nobody;
SELECT count(*) FROM ism_state.pg_stat_ism_worker;
SELECT count(*) FROM ism_state.pg_stat_ism_worker();
SELECT count(*) FROM ism_state.pg_stat_ism_routes;
SELECT count(*) FROM ism_state.pg_stat_ism_tables();
RESET ROLE;

SET ROLE regress_ism_monitor;
SELECT count(*) FROM ism_state.pg_stat_ism_worker;
SELECT count(*) FROM ism_state.pg_stat_ism_routes;
SELECT count(*) FROM ism_state.pg_stat_ism_tables;
SELECT ism_state.pg_stat_ism_reset();
RESET ROLE;

DROP ROLE regress_ism_nobody;
DROP ROLE regress_ism_monitor;
