-- The shared bucket table of ratelimit-sidecar, for operators who create it themselves and run
-- the sidecars with RATE_LIMIT_PG_CREATE_TABLE=false. The sidecar creates exactly this table
-- when it is allowed to. Rename it with RATE_LIMIT_PG_TABLE (lower-case, optionally
-- schema.table); the columns are a contract.
--
--   key         SHA-256 of the API key (RATE_LIMIT_PG_KEY_HASH=sha256, the default), or the
--               key's bytes (none). Never plaintext unless an operator asks for it.
--   tokens      tokens left at updated_at; fractional, refilled continuously. Negative: a debt of
--               tokens sidecars admitted before the row was asked (lease mode's cold keys),
--               repaid by refill before anything is granted; at most max(capacity, 1024).
--   updated_at  the database's clock_timestamp() when tokens was computed; never a pod's clock.
--   capacity    the bucket's capacity (the request's limit).
--   window_ms   milliseconds to refill from empty to full.
--   algorithm   0: a token bucket, as above. 1: a fixed window (RATE_LIMIT_ALGORITHM=
--               fixed_window): tokens = the admissions left in the window (whole), updated_at =
--               the window's start (database time), capacity = the limit, window_ms = the
--               window's length. Added with its default to a table of an older version.
--
-- Every check updates tokens and updated_at, so no index may cover them: updates then stay HOT
-- (heap-only tuples), and fillfactor 70 leaves the room on each page that HOT updates need.
-- Rows of full buckets (or of ended windows) mean the same as no row; the sidecars delete them
-- in the background.
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
  key bytea PRIMARY KEY,
  tokens double precision,
  updated_at timestamptz,
  capacity bigint,
  window_ms bigint,
  algorithm smallint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
