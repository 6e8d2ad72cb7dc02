/* ism_state--0.1--0.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION ism_state UPDATE TO '0.2'" to load this file. \quit

-- The writer prunes ism_state.applied by age every minute
-- (ism_state.applied_retention): an index instead of a scan of the table.
CREATE INDEX applied_applied_at_idx ON applied (applied_at);

-- A dead letter is recorded once per message: a redelivery (its term was
-- lost) finds the row of its stream sequence by this index.
CREATE INDEX dead_letter_stream_seq_idx ON dead_letter (stream, stream_seq);
