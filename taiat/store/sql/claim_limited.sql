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
-- `served_agents` only (NULL: every one), none of `excluded_agents` (NULL: none excluded; the
-- agents a supervisor holds back for want of memory), of no paused queue. No row when no limit
-- is set.
-- The steps of limits.py's docstring:
--
-- 1. Take the limits' lock (a transaction's advisory lock, keyed by the limits table): limit-aware
--    claims take turns across the fleet. One lock in memory, where locking each limit row would
--    write each row.
-- 2. Each later statement of this VOLATILE function reads a snapshot taken after the lock, so
--    it sees every start committed before: count each key's room, the least of its cap less
--    its running jobs and its rate less its starts in the buckets that overlap the window.
-- 3. Take the best ready jobs with no key out of room, as many as are still wanted and as the
--    tightest room of any key allows (so that no key runs out within the take), record the
--    starts of their rate-limited keys, and count the rooms anew for the next take, until
--    `want` are taken or a take finds fewer than it asked for.
-- 4. Now and then, forget the starts older than every window.
CREATE OR REPLACE FUNCTION taiat_claim_limited(
    claimer text,
    want integer,
    served_queues text[],
    served_agents text[],
    excluded_agents text[],
    window_margin double precision
) RETURNS SETOF taiat_jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stamp timestamp;
    now_epoch double precision;
    blocked text[];
    tightest bigint;
    rated boolean;
    asked integer;
    took integer;
    taken integer := 0;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM taiat_limits) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('taiat_limits'), 'taiat_limits'::regclass::oid::int);
    LOOP
        now_epoch := extract(epoch FROM clock_timestamp() AT TIME ZONE 'utc');
        WITH running AS (
            SELECT k.key, count(*) AS jobs
            FROM taiat_jobs AS j
            CROSS JOIN LATERAL (
                SELECT 'queue:' || j.queue
                UNION SELECT 'agent:' || j.agent WHERE j.agent IS NOT NULL
                UNION SELECT jsonb_array_elements_text(j.limit_keys)
            ) AS k(key)
            WHERE j.status = 'running'
            GROUP BY k.key
        ), room AS (
            SELECT l.key, l.rate_count IS NOT NULL AS has_rate, least(
                coalesce(l.concurrency - coalesce(r.jobs, 0), 2147483647),
                CASE WHEN l.rate_count IS NULL THEN 2147483647 ELSE l.rate_count - (
                    SELECT coalesce(sum(s.starts), 0) FROM taiat_limit_starts AS s
                    WHERE s.key = l.key
                      AND (s.bucket + 1) * s.width > now_epoch - l.rate_seconds - window_margin
                ) END) AS room
            FROM taiat_limits AS l LEFT JOIN running AS r ON r.key = l.key
        )
        SELECT coalesce(array_agg(r.key) FILTER (WHERE r.room <= 0), '{}'),
               min(r.room) FILTER (WHERE r.room > 0),
               bool_or(r.has_rate)
        INTO blocked, tightest, rated
        FROM room AS r;
        asked := least(want - taken, coalesce(tightest, want));
        -- Stamped after the rooms were counted: a job that ended before they were counted
        -- (and so made room) ended before this one started, by their records too.
        stamp := clock_timestamp() AT TIME ZONE 'utc';

        RETURN QUERY
            WITH chosen AS (
                SELECT j.id
                FROM taiat_jobs AS j
                WHERE j.status = 'pending' AND j.unmet_dependencies = 0
                  AND j.run_at <= (now() AT TIME ZONE 'utc')
                  AND j.queue NOT IN (SELECT name FROM taiat_queues WHERE paused)
                  AND (served_queues IS NULL OR j.queue = ANY (served_queues))
                  AND (served_agents IS NULL OR j.agent IS NULL OR j.agent = ANY (served_agents))
                  AND (excluded_agents IS NULL OR j.agent IS NULL
                       OR NOT j.agent = ANY (excluded_agents))
                  AND NOT ('queue:' || j.queue = ANY (blocked))
                  AND NOT (j.agent IS NOT NULL AND 'agent:' || j.agent = ANY (blocked))
                  AND NOT (j.limit_keys ?| blocked)
                ORDER BY j.priority DESC, j.run_at, j.created_at
                LIMIT asked
                FOR NO KEY UPDATE SKIP LOCKED
            ), claimed AS (
                UPDATE taiat_jobs AS j
                SET status = 'running', worker_id = claimer, started_at = stamp,
                    updated_at = stamp, claim_seq = j.claim_seq + 1
                FROM chosen
                WHERE j.id = chosen.id
                RETURNING j.*
            ), recorded AS (
                INSERT INTO taiat_limit_starts AS s (key, width, bucket, starts)
                SELECT l.key, l.rate_seconds / STARTS_BUCKETS,
                       floor(extract(epoch FROM stamp) / (l.rate_seconds / STARTS_BUCKETS)),
                       count(*)
                FROM claimed AS c
                JOIN taiat_limits AS l ON taiat_has_key(c.queue, c.agent, c.limit_keys, l.key)
                WHERE rated AND l.rate_count IS NOT NULL
                GROUP BY l.key, l.rate_seconds
                ON CONFLICT (key, width, bucket) DO UPDATE SET starts = s.starts + excluded.starts
            )
            SELECT * FROM claimed;
        GET DIAGNOSTICS took = ROW_COUNT;
        taken := taken + took;
        EXIT WHEN took < asked OR taken >= want;
    END LOOP;
    IF rated AND random() < 1.0 / 64 THEN
        DELETE FROM taiat_limit_starts AS s
        WHERE (s.bucket + 1) * s.width < now_epoch - window_margin
            - (SELECT coalesce(max(rate_seconds), 0) FROM taiat_limits);
    END IF;
END
$$;
