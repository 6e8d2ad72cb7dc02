/* ism_state--0.3--0.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ism_state UPDATE TO '0.4'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Routing files the platform loads, load.  Neither upstream loader checks a
-- route's names or mode (alethic-ism-core-go pkg/routing/nats/route.go
-- NatConfig, alethic-ism-core ismcore/messaging/nats_message_provider.py):
-- a stream name NATS refuses ("a.b") fails only that route, when it is
-- used; a dotted queue is a valid core-NATS queue group; a mode other than
-- "pull" is push (core-go nats_route.go Subscribe).  So the route table
-- keeps any non-empty name, queue, mirror and mode, and the workers tell
-- at use what NATS makes of them (pg_stat_ism_routes, pg_stat_ism_worker).
-- ---------------------------------------------------------------------------
ALTER TABLE route
    DROP CONSTRAINT route_name_valid,
    ADD CONSTRAINT route_name_valid CHECK (name <> '' AND length(name) <= 255),
    DROP CONSTRAINT route_queue_valid,
    ADD CONSTRAINT route_queue_valid CHECK (queue <> '' AND length(queue) <= 255),
    DROP CONSTRAINT route_mirror_valid,
    ADD CONSTRAINT route_mirror_valid CHECK (mirror <> '' AND length(mirror) <= 255),
    DROP CONSTRAINT route_mode_valid,
    ADD CONSTRAINT route_mode_valid CHECK (mode <> '' AND length(mode) <= 32);

COMMENT ON COLUMN route.name IS
'JetStream stream; a name NATS refuses fails only this route, when it is used';
COMMENT ON COLUMN route.mode IS
'core-go: pull, or push (the default; any other value is push too)';
