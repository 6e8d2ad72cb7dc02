-- The ISM catalog tables ism_state reads (quantumwake/alethic-ism-db
-- bootstrap/bootstrap.sql and bootstrap/migrations/), with the example
-- scenario of the platform's sample messages: project 5b8e2f14-…, an
-- openai processor 7a1c9e3b-… and a state-tables processor 3f2b6c1e-…,
-- route R1 = questions state → openai processor, R2 = answers state →
-- state-tables processor.  ism_state does not create these tables: the
-- platform does.  This file is for tests and the local stacks.

CREATE TYPE processor_status AS ENUM (
    'CREATED', 'ROUTE', 'ROUTED', 'QUEUED', 'RUNNING', 'COMPLETED',
    'TERMINATE', 'STOPPED', 'FAILED');
CREATE TYPE processor_state_direction AS ENUM ('INPUT', 'OUTPUT');

CREATE TABLE user_project (
    project_id varchar(36) PRIMARY KEY,
    project_name varchar(255),
    user_id varchar(36),
    created_date timestamp DEFAULT now()
);

CREATE TABLE processor_provider (
    id varchar(255) PRIMARY KEY,
    name varchar(255),
    version varchar(255),
    class_name varchar(255),
    user_id varchar(36),
    project_id varchar(36),
    route jsonb,
    created_date timestamp DEFAULT now(),
    updated_date timestamp
);

CREATE TABLE processor (
    id varchar(36) PRIMARY KEY,
    provider_id varchar(255) REFERENCES processor_provider (id),
    project_id varchar(36) NOT NULL REFERENCES user_project (project_id),
    status processor_status NOT NULL,
    properties jsonb,
    name varchar(255),
    created_date timestamp DEFAULT now(),
    updated_date timestamp
);

CREATE TABLE state (
    id varchar(36) PRIMARY KEY,
    project_id varchar(36) REFERENCES user_project (project_id),
    count int NOT NULL DEFAULT 0,
    state_type varchar(255) DEFAULT 'STATECONFIG',
    properties jsonb
);

CREATE TABLE processor_state (
    id varchar(73) UNIQUE,
    internal_id serial UNIQUE,
    processor_id varchar(36) REFERENCES processor (id),
    state_id varchar(36) REFERENCES state (id),
    direction processor_state_direction,
    status processor_status,
    count int,
    current_index int,
    maximum_index int,
    edge_function jsonb,
    PRIMARY KEY (processor_id, state_id, direction)
);
CREATE INDEX ON processor_state (processor_id, direction);
CREATE INDEX ON processor_state (state_id, direction);

CREATE TABLE state_column (
    id serial PRIMARY KEY,
    state_id varchar(36) REFERENCES state (id),
    name varchar(255),
    data_type varchar(64) DEFAULT 'STR',
    required bool,
    callable bool,
    min_length int,
    max_length int,
    dimensions int,
    value varchar(255),
    source_column_name varchar(255),
    display_order int,
    UNIQUE (state_id, name),
    UNIQUE (id, state_id)
);

CREATE TABLE state_column_data (
    column_id bigint REFERENCES state_column (id),
    data_index bigint,
    data_value text,
    data_json_value jsonb,
    UNIQUE (column_id, data_index)
);

-- the example scenario ------------------------------------------------------
INSERT INTO user_project (project_id, project_name, user_id) VALUES
    ('5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'example',
     'c41d7a92-3e5b-4f08-b6a1-9d2e8f7c5a34');

INSERT INTO processor_provider (id, name, version, class_name) VALUES
    ('language/models/openai/gpt-4o', 'OpenAI GPT-4o', 'gpt-4o', 'OpenAIChatCompletionProcessor'),
    ('data/transformers/mixer/state-tables-1.0', 'State tables', '1.0', 'StateTablesProcessor');

INSERT INTO processor (id, provider_id, project_id, status, properties, name) VALUES
    ('7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'language/models/openai/gpt-4o',
     '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED',
     '{"requestDelay": 0, "maxBatchSize": 100, "maxBatchLimit": 1, "temperature": 0.2}',
     'answer questions'),
    ('3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', 'data/transformers/mixer/state-tables-1.0',
     '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 'CREATED',
     '{"tableName": "answers", "batchSize": 10, "batchWindowTTL": 2, "includeTimestamp": true, "indexColumns": []}',
     'store answers');

INSERT INTO state (id, project_id, count, state_type) VALUES
    ('8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 2, 'StateConfig'),
    ('e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16', '5b8e2f14-9c3a-4d71-8e6f-2a9d7c4b1e03', 0, 'StateConfig');

INSERT INTO processor_state (id, processor_id, state_id, direction, status) VALUES
    -- R1: questions -> openai
    ('8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52',
     '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28',
     'INPUT', 'CREATED'),
    -- openai -> answers
    ('e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52',
     '7a1c9e3b-5d2f-4a86-b0e4-3c8f1d6a9b52', 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16',
     'OUTPUT', 'CREATED'),
    -- R2: answers -> state tables
    ('e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16:3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10',
     '3f2b6c1e-0d7a-4b8e-9a55-2f1c0b9e7d10', 'e6a9c3d7-2b1f-4e85-9c4a-7f0d8b2e5c16',
     'INPUT', 'CREATED');

INSERT INTO state_column (state_id, name, data_type, display_order) VALUES
    ('8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28', 'question', 'str', 0),
    ('8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28', 'animal', 'str', 1),
    ('8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28', 'meta', 'json', 2);

INSERT INTO state_column_data (column_id, data_index, data_value, data_json_value)
SELECT c.id, d.i, d.v, d.j
  FROM state_column c
  JOIN (VALUES ('question', 0, 'What is 2+2?', NULL::jsonb),
               ('animal', 0, 'cat', NULL),
               ('meta', 0, NULL, '{"k": 1}'),
               ('question', 1, 'Hi', NULL)) AS d (col, i, v, j)
    ON d.col = c.name
 WHERE c.state_id = '8d2f6a1b-4c7e-4b93-a5d0-1e9f3c6b7a28';
