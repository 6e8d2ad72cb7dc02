-- Secrets are for superusers only; URLs never show a password.
CREATE ROLE regress_ism_user;

SET ROLE regress_ism_user;
SHOW ism_state.nats_url;
SHOW ism_state.nats_user;
-- refused (42501, insufficient_privilege; the message's wording changed in 16)
\set VERBOSITY sqlstate
SHOW ism_state.nats_password;
SHOW ism_state.nats_token;
SHOW ism_state.nats_creds_file;
SHOW ism_state.nats_tls_key;
\set VERBOSITY default
SELECT name FROM pg_settings
 WHERE name LIKE 'ism_state.nats_%' ORDER BY 1;
RESET ROLE;

-- the workers' settings are server-wide: no SET in a session
SET ism_state.nats_url = 'nats://elsewhere:4222';
SET ism_state.database = 'other';

-- an embedded password is masked wherever the URL is shown
ALTER SYSTEM SET ism_state.nats_url = 'nats://alice:s3cret@127.0.0.1:4222,tls://tok@10.0.0.1:4443';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW ism_state.nats_url;
SELECT setting FROM pg_settings WHERE name = 'ism_state.nats_url';
ALTER SYSTEM RESET ism_state.nats_url;
SELECT pg_reload_conf();

-- unknown names in the reserved prefix are refused
SET ism_state.no_such_setting = 1;

DROP ROLE regress_ism_user;
