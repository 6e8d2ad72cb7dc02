-- The extension's objects, settings and the privileges on them.
CREATE EXTENSION ism_state;

SELECT e.extname, e.extversion, n.nspname AS schema
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'ism_state';

-- every object the extension owns
SELECT pg_describe_object(classid, objid, objsubid) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ism_state')
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
