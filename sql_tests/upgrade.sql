-- Upgrading: a 0.1 installation holding data, brought to the current
-- version by ALTER EXTENSION ism_state UPDATE, keeps its data and gains
-- what the later versions add.
DROP EXTENSION ism_state CASCADE;
CREATE EXTENSION ism_state VERSION '0.1';

SELECT selector FROM ism_state.add_route('test/upgrade', 'upgrade.subject', 'upgrade_stream',
                                        'nats://127.0.0.1:4222', '{"ack_wait": 30}');
INSERT INTO ism_state.applied (stream, stream_seq, applied_at)
SELECT 'upgrade_stream', n, '2026-01-01 00:00:00+00'::timestamptz + n * interval '1 second'
  FROM generate_series(1, 1000) n;
INSERT INTO ism_state.dead_letter (worker, subject, stream, stream_seq, deliveries, payload, error)
VALUES ('writer', 'upgrade.subject', 'upgrade_stream', 7, 1, '\x7b7d', 'kept across the upgrade');
-- a least-privilege worker role (scripts/worker-role.sql of 0.1)
CREATE ROLE upgrade_worker;
GRANT SELECT, INSERT, DELETE ON ism_state.applied TO upgrade_worker;
-- 0.1's route table refuses a stream name NATS refuses
\set VERBOSITY terse
SELECT ism_state.add_route('test/dotted', 'dotted.subject', 'dotted.stream');
\set VERBOSITY default
-- 0.1 has no index for the writer's pruning of applied
SELECT indexname FROM pg_indexes WHERE schemaname = 'ism_state' AND tablename IN ('applied', 'applied_msg_id') ORDER BY 1;

ALTER EXTENSION ism_state UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'ism_state';

-- the data is all there
SELECT selector, name, subject, ack_wait FROM ism_state.route WHERE selector = 'test/upgrade';
SELECT count(*), min(stream_seq), max(stream_seq) FROM ism_state.applied;
SELECT stream_seq, error FROM ism_state.dead_letter;

-- 0.2: the writer's pruning (DELETE … WHERE applied_at < …) finds its rows by index
SELECT indexname FROM pg_indexes WHERE schemaname = 'ism_state' AND tablename IN ('applied', 'applied_msg_id') ORDER BY 1;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
DELETE FROM ism_state.applied WHERE applied_at < now() - make_interval(secs => 3600);
RESET enable_seqscan;

-- 0.3: the Msg-Ids of applied messages, writable by whoever records applied ones
SELECT column_name, data_type FROM information_schema.columns
 WHERE table_schema = 'ism_state' AND table_name = 'applied_msg_id' ORDER BY ordinal_position;
SELECT p, has_table_privilege('upgrade_worker', 'ism_state.applied_msg_id', p)
  FROM unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p;
REVOKE ALL ON ism_state.applied FROM upgrade_worker;
REVOKE ALL ON ism_state.applied_msg_id FROM upgrade_worker;
-- from 17, the privileges the update script gave are the extension's
-- initial ones (pg_init_privs) and hold the role until DROP OWNED BY
DROP OWNED BY upgrade_worker;
DROP ROLE upgrade_worker;

-- 0.4: what the platform loads, loads: a stream name NATS refuses, a
-- dotted queue, any mode
SELECT selector, name, queue, mode
  FROM ism_state.add_route('test/dotted', 'dotted.subject', 'dotted.stream',
                           options => '{"queue": "dotted.queue", "mode": "sideways"}');
SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) AS route_checks
  FROM pg_constraint WHERE conrelid = 'ism_state.route'::regclass AND contype = 'c' \gset

-- the latest version before this one, holding data in every table (the
-- Msg-Ids of 0.3 too), brought up to date
DROP EXTENSION ism_state CASCADE;
CREATE EXTENSION ism_state VERSION '0.3';
SELECT selector FROM ism_state.add_route('test/upgrade', 'upgrade.subject', 'upgrade_stream');
INSERT INTO ism_state.applied (stream, stream_seq, applied_at)
SELECT 'upgrade_stream', n, '2026-01-01 00:00:00+00'::timestamptz FROM generate_series(1, 100) n;
INSERT INTO ism_state.applied_msg_id (stream, msg_id, stream_seq, stored_at)
SELECT 'upgrade_stream', 'ism:m' || n, n, '2026-01-01 00:00:00+00' FROM generate_series(1, 100) n;
INSERT INTO ism_state.dead_letter (worker, subject, stream, stream_seq, deliveries, payload, error)
VALUES ('router', 'upgrade.subject', 'upgrade_stream', 101, 3, '\x6e6f7420736f6e', 'kept from 0.3');
ALTER EXTENSION ism_state UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'ism_state';
SELECT selector, name, subject FROM ism_state.route WHERE selector = 'test/upgrade';
SELECT count(*), min(stream_seq), max(stream_seq) FROM ism_state.applied;
SELECT count(*), min(msg_id), max(stream_seq) FROM ism_state.applied_msg_id;
SELECT stream_seq, deliveries, error FROM ism_state.dead_letter;

-- a new installation is the same as an upgraded one
DROP EXTENSION ism_state CASCADE;
CREATE EXTENSION ism_state;
SELECT extversion FROM pg_extension WHERE extname = 'ism_state';
SELECT string_agg(conname || ': ' || pg_get_constraintdef(oid), E'\n' ORDER BY conname) = :'route_checks'
       AS same_route_checks
  FROM pg_constraint WHERE conrelid = 'ism_state.route'::regclass AND contype = 'c';
SELECT indexname FROM pg_indexes WHERE schemaname = 'ism_state' AND tablename IN ('applied', 'applied_msg_id') ORDER BY 1;
