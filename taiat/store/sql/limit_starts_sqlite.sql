-- On SQLite, every claim records the starts of its jobs' rate-limited keys as it marks them
-- running, in the same statement (see taiat/store/queries/limits.py; on PostgreSQL the
-- function taiat_claim_limited records them). Only the claim adds one to claim_seq. A key is
-- sought in the explicit keys' JSON text, where it is written as it is, in double quotes.
CREATE TRIGGER IF NOT EXISTS taiat_limit_starts_recorded
AFTER UPDATE OF claim_seq ON taiat_jobs
WHEN NEW.status = 'running'
BEGIN
    INSERT INTO taiat_limit_starts (key, started_at, job_id, claim_seq)
    SELECT l.key, NEW.started_at, NEW.id, NEW.claim_seq
    FROM taiat_limits AS l
    WHERE l.rate_count IS NOT NULL
      AND (l.key = 'queue:' || NEW.queue OR l.key = 'agent:' || NEW.agent
           OR instr(NEW.limit_keys, '"' || l.key || '"') > 0);
END;
