-- The extension's objects, settings and the privileges on them.
CREATE EXTENSION ism_state;

SELECT e.extname, e.extversion, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'ism_state';

-- every object the extension owns (but its tables' and views' row types
-- and their arrays, which 17 lists too)
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend d
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ism_state')
   AND NOT EXISTS (SELECT 1 FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem
                    WHERE d.classid = 'pg_type'::regclass AND t.oid = d.objid
                      AND (t.typrelid <> 0 OR e.typrelid <> 0))
 ORDER BY 1;

-- settings and their defaults
SELECT name, setting, unit, context
  FROM pg_settings WHERE name LIKE 'ism_state.%' ORDER BY name;

-- a second CREATE fails cleanly; the schema is fixed
CREATE EXTENSION ism_state;
CREATE EXTENSION ism_state SCHEMA public;

-- dropping and creating again works
DROP EXTENSION ism_state;
SELECT count(*) FROM pg_proc WHERE proname = 'pg_stat_ism_worker';
CREATE EXTENSION ism_state;
