-- Every function, table, view and sequence of the extension and who may
-- use it ("OWNER" is the bootstrap superuser that created it): monitoring
-- for pg_monitor, the name helpers for everyone, the rest for superusers
-- and whom they grant it to.
-- (17 gave an owner MAINTAIN, "m": left out, to read the same on every major)
SELECT pg_describe_object(classid, objid, 0) AS object,
       regexp_replace(regexp_replace(coalesce(CASE classid
                 WHEN 'pg_proc'::regclass THEN (SELECT proacl FROM pg_proc WHERE oid = objid)
                 WHEN 'pg_class'::regclass THEN (SELECT relacl FROM pg_class WHERE oid = objid)
               END::text, '(default: owner only)'),
               '(^|[{,/])' || current_user || '(?=[=/,}])', '\1OWNER', 'g'),
               'OWNER=arwdDxtm/', 'OWNER=arwdDxt/', 'g') AS privileges
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ism_state')
   AND deptype = 'e'
   AND classid IN ('pg_proc'::regclass, 'pg_class'::regclass)
 ORDER BY 1;

-- the schema: usage for pg_monitor only
SELECT regexp_replace(nspacl::text, '(^|[{,/])' || current_user || '(?=[=/,}])', '\1OWNER', 'g')
  FROM pg_namespace WHERE nspname = 'ism_state';
