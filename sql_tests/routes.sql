-- The route catalogue: loading, exporting, adding, removing, resolving.
SET client_min_messages = warning;
\getenv abs_srcdir PG_ABS_SRCDIR
\set routing_file :abs_srcdir '/../data/routing.yaml'

-- a snapshot of the table, to show that a failed load changes nothing
CREATE FUNCTION routes_digest() RETURNS text LANGUAGE sql AS $$
    SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY selector), ''))
      FROM (SELECT selector, name, subject, url, queue, mode, ack_wait,
                   batch_size, max_ack_pending, jetstream_enabled,
                   concurrent_enabled, concurrent_max_workers,
                   concurrent_priority_enabled, concurrent_max_workers_high,
                   mirror, extra
              FROM ism_state.route) r
$$;

-- === the platform's example file loads as it is ============================
SELECT ism_state.load_routes_file(:'routing_file');
SELECT selector, name, subject, url, queue, mode, ack_wait, batch_size,
       max_ack_pending, jetstream_enabled AS js, concurrent_enabled AS conc,
       concurrent_max_workers AS cmw, concurrent_priority_enabled AS prio,
       concurrent_max_workers_high AS cmwh, mirror, extra
  FROM ism_state.route ORDER BY selector;

-- === export round-trips =====================================================
\a \t
SELECT ism_state.export_routes();
\a \t
SELECT routes_digest() AS before \gset
SELECT ism_state.load_routes(ism_state.export_routes(), true);
SELECT routes_digest() = :'before' AS round_trip_identical;
-- so does a route added with SQL, without url, with extra keys
SELECT selector FROM ism_state.add_route('extra/x', 'extra.x',
       options => '{"team": "a \"b\"", "n": [1, {"k": null}], "yes": "no"}');
SELECT routes_digest() AS before \gset
SELECT ism_state.load_routes(ism_state.export_routes(), true);
SELECT routes_digest() = :'before' AS round_trip_identical;
SELECT extra FROM ism_state.route WHERE selector = 'extra/x';
SELECT ism_state.remove_route('extra/x');

-- loading the same file again rewrites nothing
SELECT max(updated_at) AS last_update FROM ism_state.route \gset
SELECT ism_state.load_routes_file(:'routing_file');
SELECT max(updated_at) = :'last_update' AS unchanged_rows_not_rewritten
  FROM ism_state.route;

-- === lookup rules ===========================================================
-- exact
SELECT selector FROM ism_state.resolve_route('processor/monitor');
-- wildcard
SELECT selector FROM ism_state.resolve_route('language/models/openai/gpt-4o');
-- the prefix is a plain string prefix, as upstream: no segment boundary
SELECT selector FROM ism_state.resolve_route('language/models/openaiX');
-- a wildcard selector matches itself exactly
SELECT selector FROM ism_state.resolve_route('language/models/openai/*');
-- an exact selector is not a prefix of anything
SELECT selector FROM ism_state.resolve_route('code/executor/python/python-executor-1.0/x');
-- none
SELECT selector FROM ism_state.resolve_route('vision/models/x');
-- ambiguous: no longest-prefix rule
SELECT selector FROM ism_state.add_route('language/models/*', 'language.models');
SELECT selector FROM ism_state.resolve_route('language/models/openai/gpt-4o');
-- exact still wins over any number of wildcards
SELECT selector FROM ism_state.add_route('language/models/openai/gpt-4o', 'gpt4o');
SELECT selector FROM ism_state.resolve_route('language/models/openai/gpt-4o');

-- === add_route and remove_route =============================================
SELECT selector, name, subject, url, mode, ack_wait, batch_size, extra
  FROM ism_state.add_route('vision/models/*', 'vision.models');
SELECT selector, name, subject, url, queue, mode, ack_wait, batch_size,
       max_ack_pending, concurrent_enabled, extra
  FROM ism_state.add_route('vision/models/*', 'vision.models', 'vision',
       'nats://127.0.0.1:4222',
       '{"mode": "pull", "queue": "vision_workers", "ack_wait": 30,
         "max_ack_pending": 50, "concurrent_enabled": true,
         "team": "cv", "limits": {"rps": 5}}');
-- bad options: each names the option and what is wrong
SELECT ism_state.add_route('v/x', 'v.x', options => '{"ack_wait": "30"}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"ack_wait": 1.5}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"ack_wait": 0}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"batch_size": 100000}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"concurrent_enabled": "yes"}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"mode": ""}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"queue": ""}');
SELECT ism_state.add_route('v/x', 'v.x', options => '{"subject": "other"}');
SELECT ism_state.add_route('v/x', 'v..x');
SELECT ism_state.add_route('v/x', 'v.*');
SELECT ism_state.add_route('v/x', 'v.x', '');
SELECT ism_state.add_route('v/x', NULL);
SELECT ism_state.add_route('', 'v.x');
-- what upstream loads, loads: a name NATS refuses (a warning: it fails
-- where JetStream uses it), a dotted queue (a core NATS queue group), an
-- unknown mode (push, as core-go; a warning)
SELECT name, queue, mode FROM ism_state.add_route('v/x', 'v.x', 'bad name');
SELECT name, queue, mode FROM ism_state.add_route('v/x', 'v.x', 'v.x', options => '{"jetstream_enabled": false}');
SELECT name, queue, mode FROM ism_state.add_route('v/x', 'v.x', options => '{"queue": "a.b"}');
SELECT name, queue, mode FROM ism_state.add_route('v/x', 'v.x', options => '{"mode": "stream"}');
SELECT ism_state.remove_route('v/x');
SELECT ism_state.remove_route('vision/models/*');
SELECT ism_state.remove_route('vision/models/*');
SELECT ism_state.remove_route('language/models/*');
SELECT ism_state.remove_route('language/models/openai/gpt-4o');

-- the table's own constraints hold for direct writes too (terse: the
-- failing row's timestamps would differ from run to run)
\set VERBOSITY terse
INSERT INTO ism_state.route (selector, name, subject) VALUES ('d', '', 'd');
INSERT INTO ism_state.route (selector, name, subject, mode) VALUES ('d', 'd', 'd', '');
INSERT INTO ism_state.route (selector, name, subject) VALUES ('d', 'd', 'd.');
INSERT INTO ism_state.route (selector, name, subject, concurrent_max_workers)
VALUES ('d', 'd', 'd', 0);
\set VERBOSITY default

-- === YAML as a YAML user writes it ==========================================
-- anchors, aliases, merge keys (one mapping or several), flow style,
-- comments, quoting ("yes" quoted is a string), block scalars
SELECT ism_state.load_routes($$
base: &url nats://127.0.0.1:4222
messageConfig:
  routes:
    - <<: [{ack_wait: 45}, {batch_size: 3}]
      selector: yaml/anchor
      name: yaml_anchor
      subject: yaml.anchor
      url: *url
    - {selector: "yaml/flow", name: 'yaml_flow', subject: yaml.flow, url: *url,
       jetstream_enabled: off, concurrent_enabled: Yes}
    - selector: yaml/quoted
      name: "yes"
      subject: 'yaml.quoted'
      url: *url
      labels: [a, 1, 2.5, true, ~, "x"]
      note: |
        kept as it is
$$);
SELECT selector, name, ack_wait, batch_size, jetstream_enabled,
       concurrent_enabled, extra
  FROM ism_state.route WHERE selector LIKE 'yaml/%' ORDER BY selector;

-- replace: routes absent from the document go
SELECT ism_state.load_routes($$messageConfig: {routes: [
  {selector: only/one, name: only_one, subject: only.one, url: "nats://h:4222"}]}$$,
  replace => true);
SELECT selector FROM ism_state.route ORDER BY selector;
SELECT ism_state.load_routes($$messageConfig: {routes: []}$$, replace => true);
SELECT count(*) FROM ism_state.route;
SELECT ism_state.load_routes_file(:'routing_file');

-- === bad documents: a clear error, and the table unchanged ==================
SELECT routes_digest() AS before \gset
-- YAML syntax error
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a
      name: [unclosed
$$);
-- not YAML at all (a tab where indentation is expected)
SELECT ism_state.load_routes(E'messageConfig:\n\troutes: []\n');
-- empty, blank, comment only
SELECT ism_state.load_routes('');
SELECT ism_state.load_routes(E'   \n# nothing here\n');
-- a scalar, a list
SELECT ism_state.load_routes('hello');
SELECT ism_state.load_routes('[1, 2]');
-- no messageConfig, routes not a list, entry not a mapping
SELECT ism_state.load_routes('routes: []');
SELECT ism_state.load_routes('messageConfig: {routes: {selector: a}}');
SELECT ism_state.load_routes('messageConfig: {routes: [a/b]}');
-- missing required key
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a/b
      name: a_b
      url: nats://h:4222
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a/b
      subject: a.b
$$);
-- wrong types
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a/b
      name: a_b
      subject: a.b
      url: nats://h:4222
      ack_wait: ninety
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: a.b, url: "n://h", jetstream_enabled: 1}
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: [a, b], url: "n://h"}
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: a.b, url: "n://h", ack_wait: 99999999999999999999999}
$$);
-- bad subject, empty name
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a/b
      name: ""
      subject: a.b
      url: nats://h:4222
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: "a.>", url: "n://h"}
$$);
-- duplicate selector, duplicate key
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: a.b, url: "n://h"}
    - {selector: c/d, name: c_d, subject: c.d, url: "n://h"}
    - {selector: a/b, name: a_b2, subject: a.b, url: "n://h"}
$$);
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - selector: a/b
      name: a_b
      name: a_c
      subject: a.b
      url: n://h
$$);
-- all or nothing: a good entry before a bad one is not loaded either
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: good/one, name: good_one, subject: good.one, url: "n://h"}
    - {selector: bad/one, name: bad_one, subject: bad.one, url: "n://h", ack_wait: 0}
$$);
-- an undefined alias
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: a.b, url: *nowhere}
$$);
-- two documents
SELECT ism_state.load_routes(E'messageConfig: {routes: []}\n---\nmore: 1\n');
-- an alias bomb
SELECT ism_state.load_routes($$
a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
messageConfig:
  routes:
    - {selector: a/b, name: a_b, subject: a.b, url: "n://h", bomb: *f}
$$);
-- deep nesting
SELECT ism_state.load_routes('messageConfig: {routes: [{selector: a/b, name: a_b, subject: a.b, url: "n://h", deep: '
       || repeat('[', 100) || repeat(']', 100) || '}]}');
-- huge
SELECT ism_state.load_routes(repeat('#', 17 * 1024 * 1024));
-- a missing file
SELECT ism_state.load_routes_file('/nonexistent/routing.yaml');
SELECT routes_digest() = :'before' AS table_unchanged;

-- === what the platform loads, loads =========================================
-- What the platform's loaders take (core-go route.go, ismcore
-- nats_message_provider.py check no names or modes), ism_state takes too;
-- what NATS or the lookup will refuse is said in a warning, and fails where
-- it is used.  Stream names NATS refuses (the state router's old example
-- named streams after their subjects), a dotted queue, an unknown mode:
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: image/models/openai/dall-e-3, name: "image.models.openai.dall-e-3",
       subject: "image.models.openai.dall-e-3", url: "nats://h:4222"}
    - {selector: core/only, name: "core.only", subject: core.only, url: "nats://h:4222",
       jetstream_enabled: false, queue: "core.only.workers"}
    - {selector: odd/mode, name: odd_mode, subject: odd.mode, url: "nats://h:4222",
       mode: sideways}
$$);
SELECT selector, name, queue, mode, batch_size FROM ism_state.route
 WHERE selector IN ('image/models/openai/dall-e-3', 'core/only', 'odd/mode') ORDER BY 1;
-- overlapping wildcards: loaded, named in a warning; their lookup fails
SELECT ism_state.load_routes($$messageConfig:
  routes:
    - {selector: "a/*", name: a, subject: a, url: "nats://h:4222"}
    - {selector: "a/b/*", name: a_b, subject: a.b, url: "nats://h:4222"}
    - {selector: "a/bc/*", name: a_bc, subject: a.bc, url: "nats://h:4222"}
    - {selector: "x/*", name: x, subject: x, url: "nats://h:4222"}
$$);
SELECT selector FROM ism_state.resolve_route('a/bcd');
SELECT selector FROM ism_state.resolve_route('x/y');
-- no routes at all (the state router's Pulsar-era routing.yaml): nothing
-- loaded, with a warning naming what is there
SELECT routes_digest() AS before \gset
SELECT ism_state.load_routes($$messageConfig:
  root_route: {topic: ism_general}
  topic_routes:
    - {selector: processor/monitor, topic: ism_monitor}
$$);
SELECT ism_state.load_routes('messageConfig: {}');
SELECT routes_digest() = :'before' AS table_unchanged_by_an_empty_load;
DELETE FROM ism_state.route
 WHERE selector IN ('image/models/openai/dall-e-3', 'core/only', 'odd/mode',
                    'a/*', 'a/b/*', 'a/bc/*', 'x/*');

-- === privileges =============================================================
SELECT extconfig::regclass[] AS dumped_by_pg_dump
  FROM pg_extension WHERE extname = 'ism_state';
CREATE ROLE regress_ism_user;
GRANT USAGE ON SCHEMA ism_state TO regress_ism_user;
SET ROLE regress_ism_user;
SELECT ism_state.load_routes('messageConfig: {routes: []}');
SELECT ism_state.load_routes_file(:'routing_file');
SELECT ism_state.add_route('a', 'a');
SELECT ism_state.remove_route('a');
SELECT ism_state.export_routes();
SELECT ism_state.resolve_route('a');
SELECT count(*) FROM ism_state.route;
RESET ROLE;
-- a grantee of load_routes_file still needs file access
GRANT EXECUTE ON FUNCTION ism_state.load_routes_file(text, boolean) TO regress_ism_user;
SET ROLE regress_ism_user;
SELECT ism_state.load_routes_file('/nonexistent/routing.yaml');
RESET ROLE;
REVOKE ALL ON SCHEMA ism_state FROM regress_ism_user;
REVOKE ALL ON FUNCTION ism_state.load_routes_file(text, boolean) FROM regress_ism_user;
DROP ROLE regress_ism_user;
DROP FUNCTION routes_digest();
