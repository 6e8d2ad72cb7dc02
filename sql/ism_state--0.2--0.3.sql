/* ism_state--0.2--0.3.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ism_state UPDATE TO '0.3'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Exactly-once across a nats-server restart: the Nats-Msg-Id of each message
-- the writer committed.  JetStream drops a second publication with the same
-- Msg-Id within the stream's duplicate window, but after a restart it knows
-- only the ids of the messages still stored; a work-queue stream no longer
-- holds the ones already consumed, so a publisher's retry (the router's, say,
-- after its ack was lost) is stored again.  The writer skips such a copy as
-- JetStream would have: same stream, same Msg-Id, stored within the window.
-- Not dumped, as ism_state.applied.
-- ---------------------------------------------------------------------------
CREATE TABLE applied_msg_id (
    stream      text NOT NULL,
    msg_id      text NOT NULL,
    stream_seq  bigint NOT NULL,
    stored_at   timestamptz NOT NULL,
    PRIMARY KEY (stream, msg_id)
);

COMMENT ON TABLE applied_msg_id IS
'Nats-Msg-Id of the JetStream messages whose records the state-tables writer has committed';
COMMENT ON COLUMN applied_msg_id.stored_at IS
'When the stream stored the message (its JetStream timestamp)';

-- pruned by age with ism_state.applied
CREATE INDEX applied_msg_id_stored_at_idx ON applied_msg_id (stored_at);

-- A role that records applied messages (scripts/worker-role.sql) records
-- their Msg-Ids too, so an upgrade needs no new grant to keep writing.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee
               FROM pg_class c, aclexplode(c.relacl) a
              WHERE c.oid = 'ism_state.applied'::regclass
                AND a.privilege_type = 'INSERT'
                AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ism_state.applied_msg_id TO %s',
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
END
$$;
