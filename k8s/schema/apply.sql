-- Run by the Job in job.yaml: creates the table of schema/postgres.sql and lets the sidecars'
-- role use it. Idempotent: running it again changes nothing.
\set ON_ERROR_STOP on
\getenv sidecar_role SIDECAR_DB_ROLE
BEGIN;
-- The lock a sidecar allowed to create the table takes first (RATE_LIMIT_PG_CREATE_TABLE=true),
-- so this Job and such sidecars never create the table at the same moment.
SELECT pg_advisory_xact_lock(hashtext('ratelimit:rate_limit_buckets'));
\ir postgres.sql
-- A table made by an older version lacks the column recording each row's algorithm.
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS algorithm smallint NOT NULL DEFAULT 0;
-- What every check needs (SELECT ... FOR UPDATE, INSERT, UPDATE) and the background deletion of
-- full buckets (DELETE). No CREATE: the sidecars never run DDL.
GRANT SELECT, INSERT, UPDATE, DELETE ON rate_limit_buckets TO :"sidecar_role";
COMMIT;
