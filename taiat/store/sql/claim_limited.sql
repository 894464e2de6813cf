-- The limit-aware claim on PostgreSQL, in one call (see taiat/store/queries/limits.py, whose
-- SQLite path takes the same steps from Python).
--
-- taiat_has_key: whether a job of `queue` and `agent` (NULL: not an agent job) with the
-- explicit keys `explicit` has the limit key `key` (see validation.limit_keys).
CREATE OR REPLACE FUNCTION taiat_has_key(queue text, agent text, explicit jsonb, key text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT key = 'queue:' || queue OR key = 'agent:' || agent OR explicit ? key
$$;

-- taiat_claim_limited: mark up to `want` ready jobs running for `claimer`, best first, each
-- only if every one of its limited keys has room and rate to start it; of `served_queues` and
-- `served_agents` only (NULL: every one), of no paused queue. No row when no limit is set.
--
-- 1. Take the limits' lock (a transaction's advisory lock, keyed by the limits table): limit-aware
--    claims take turns across the fleet. One lock in memory, where locking each limit row would
--    write each row.
-- 2. Each later statement of this VOLATILE function reads a snapshot taken after the lock, so
--    it sees every start committed before: count each key's room, the least of its cap less
--    its running jobs and its rate less its starts in the window.
-- 3. Read up to `want * candidates` of the best ready jobs with no key out of room, and take
--    in order those whose every limited key still has room, counting each one taken.
-- 4. Mark them running, stamped with the time after the lock, and record the starts of their
--    rate-limited keys; now and then forget the starts older than every window.
CREATE OR REPLACE FUNCTION taiat_claim_limited(
    claimer text,
    want integer,
    served_queues text[],
    served_agents text[],
    candidates integer,
    window_margin double precision
) RETURNS SETOF taiat_jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stamp timestamp;
    room jsonb;
    blocked text[];
    job record;
    taken text[] := '{}';
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taiat_limits) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('taiat_limits'), 'taiat_limits'::regclass::oid::int);
    stamp := clock_timestamp() AT TIME ZONE 'utc';
    WITH running AS MATERIALIZED (
        SELECT queue, agent, limit_keys FROM taiat_jobs WHERE status = 'running'
    )
    SELECT jsonb_object_agg(l.key, least(
        coalesce(l.concurrency - (
            SELECT count(*) FROM running AS r
            WHERE taiat_has_key(r.queue, r.agent, r.limit_keys, l.key)
        ), 2147483647),
        coalesce(l.rate_count - (
            SELECT count(*) FROM taiat_limit_starts AS s
            WHERE s.key = l.key
              AND s.started_at >= stamp - make_interval(secs => l.rate_seconds + window_margin)
        ), 2147483647)))
    INTO room
    FROM taiat_limits AS l;
    blocked := ARRAY(SELECT key FROM jsonb_each_text(room) WHERE value::bigint <= 0);

    FOR job IN
        SELECT j.id, j.queue, j.agent, j.limit_keys
        FROM taiat_jobs AS j
        WHERE j.status = 'pending' AND j.unmet_dependencies = 0
          AND j.run_at <= (now() AT TIME ZONE 'utc')
          AND j.queue NOT IN (SELECT name FROM taiat_queues WHERE paused)
          AND (served_queues IS NULL OR j.queue = ANY (served_queues))
          AND (served_agents IS NULL OR j.agent IS NULL OR j.agent = ANY (served_agents))
          AND NOT ('queue:' || j.queue = ANY (blocked))
          AND NOT (j.agent IS NOT NULL AND 'agent:' || j.agent = ANY (blocked))
          AND NOT (j.limit_keys ?| blocked)
        ORDER BY j.priority DESC, j.run_at, j.created_at
        LIMIT want * candidates
        FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM jsonb_each_text(room) AS k
            WHERE k.value::bigint <= 0 AND taiat_has_key(job.queue, job.agent, job.limit_keys, k.key)
        );
        room := room || coalesce((
            SELECT jsonb_object_agg(k.key, k.value::bigint - 1) FROM jsonb_each_text(room) AS k
            WHERE taiat_has_key(job.queue, job.agent, job.limit_keys, k.key)
        ), '{}');
        taken := taken || job.id;
        EXIT WHEN cardinality(taken) >= want;
    END LOOP;
    IF cardinality(taken) = 0 THEN
        RETURN;
    END IF;

    RETURN QUERY
        UPDATE taiat_jobs AS j
        SET status = 'running', worker_id = claimer, started_at = stamp, updated_at = stamp,
            claim_seq = j.claim_seq + 1
        WHERE j.id = ANY (taken)
        RETURNING j.*;
    INSERT INTO taiat_limit_starts (key, started_at, job_id, claim_seq)
    SELECT l.key, stamp, j.id, j.claim_seq
    FROM taiat_jobs AS j
    JOIN taiat_limits AS l ON taiat_has_key(j.queue, j.agent, j.limit_keys, l.key)
    WHERE j.id = ANY (taken) AND l.rate_count IS NOT NULL;
    IF random() < 1.0 / 64 THEN
        DELETE FROM taiat_limit_starts AS s
        WHERE s.started_at < stamp - make_interval(secs => (
            SELECT coalesce(max(rate_seconds), 0) + window_margin FROM taiat_limits));
    END IF;
END
$$;
