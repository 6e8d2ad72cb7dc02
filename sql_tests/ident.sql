-- Table and column names of the state-tables writer.

-- as upstream: <processor_id>_<tableName>, or <processor_id>
SELECT ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', 'answers');
SELECT ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', '');
SELECT ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', NULL);
SELECT ism_state.table_name(NULL, 'x');

-- over 63 bytes: cut and hashed, never silently truncated into another name
SELECT t, length(t) AS chars, octet_length(t) AS bytes
  FROM (SELECT ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10',
                                    'a_long_table_name_that_does_not_fit') AS t) s;
SELECT ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', 'a_long_table_name_that_does_not_fit_1')
    <> ism_state.table_name('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', 'a_long_table_name_that_does_not_fit_2')
    AS distinct_names;

-- keys: hostile ones are kept as they are (they are always quoted)
SELECT k, ism_state.column_name(k) AS col, quote_ident(ism_state.column_name(k)) AS quoted
  FROM (VALUES ('question'), ('Mixed Case'), ('a"b'), ('x; DROP TABLE t; --'),
               ('?'), ('@id'), ('ünïcødé'), ('_timestamp')) v (k);

-- keys that cannot be identifiers: empty, over 63 bytes (cut on a character
-- boundary), or looking like a mapped name
SELECT ism_state.column_name('') AS empty_key;
SELECT c, octet_length(c) AS bytes
  FROM (SELECT ism_state.column_name(repeat('ü', 40)) AS c) s;
SELECT ism_state.column_name(repeat('k', 63)) = repeat('k', 63) AS fits,
       ism_state.column_name(repeat('k', 64)) <> repeat('k', 64) AS mapped;
SELECT ism_state.column_name('x~0123456789ab') AS looks_mapped,
       ism_state.column_name('x~0123456789ab') <> 'x~0123456789ab' AS remapped;

-- distinct keys, distinct columns (10,000 long keys sharing a 60-byte prefix)
SELECT count(DISTINCT ism_state.column_name(repeat('p', 60) || g)) AS distinct_columns
  FROM generate_series(1, 10000) g;

-- the names work as identifiers
CREATE TABLE ident_check (dummy int);
DO $$
DECLARE k text;
BEGIN
    FOREACH k IN ARRAY ARRAY['', 'a"b', repeat('z', 100), 'x; DROP TABLE ident_check; --'] LOOP
        EXECUTE format('ALTER TABLE ident_check ADD COLUMN %I text',
                       ism_state.column_name(k));
    END LOOP;
END
$$;
SELECT count(*) AS columns FROM pg_attribute
 WHERE attrelid = 'ident_check'::regclass AND attnum > 0;
DROP TABLE ident_check;
