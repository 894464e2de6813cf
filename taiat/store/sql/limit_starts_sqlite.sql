-- On SQLite, every claim counts the starts of its jobs' rate-limited keys into their buckets
-- (see taiat_limit_starts in taiat/store/schema.py) as it marks them running, in the same
-- statement (see taiat/store/queries/limits.py; on PostgreSQL the function
-- taiat_claim_limited counts them). Only the claim adds one to claim_seq. A key is sought in
-- the explicit keys' JSON text, where it is written as it is, in double quotes.
CREATE TRIGGER IF NOT EXISTS taiat_limit_starts_counted
AFTER UPDATE OF claim_seq ON taiat_jobs
WHEN NEW.status = 'running'
BEGIN
    INSERT INTO taiat_limit_starts (key, width, bucket, starts)
    SELECT l.key, l.rate_seconds / STARTS_BUCKETS,
           CAST((julianday(NEW.started_at) - 2440587.5) * 86400.0
                / (l.rate_seconds / STARTS_BUCKETS) AS INTEGER),
           1
    FROM taiat_limits AS l
    WHERE l.rate_count IS NOT NULL
      AND (l.key = 'queue:' || NEW.queue OR l.key = 'agent:' || NEW.agent
           OR instr(NEW.limit_keys, '"' || l.key || '"') > 0)
    ON CONFLICT (key, width, bucket) DO UPDATE SET starts = starts + 1;
END;
