-- 0002_notification_model: SPEC §9 (payload, collapse, expiry, scheduling,
-- unread counts, retention).  Idempotent like 0001.
--
-- Rolling upgrade: every new column is nullable or has a default, and no
-- column is renamed or dropped, so a server of the previous version keeps
-- reading and writing notifications as before (its rows get status
-- 'queued', tags '{}').  Unread counts: this version maintains
-- notification_counts in the same statements that change notifications (the
-- exact value is then in the statement's RETURNING) and marks its sessions
-- with `SET notisync.counts = 'app'`; every other writer -- a previous
-- version during the upgrade, or SQL run by hand -- is counted by the
-- statement triggers below, which do nothing for the marked sessions.

ALTER TABLE notifications ADD COLUMN IF NOT EXISTS data jsonb;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS url text;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS collapse_key text;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS deliver_at timestamptz;
-- 'scheduled' (deliver_at ahead), 'queued', 'canceled'
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'queued';
-- Scheduler lease: set while an instance queues a due notification; a
-- lease that ran out (the instance died) lets another instance finish it.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS claim_until timestamptz;

CREATE INDEX IF NOT EXISTS notifications_due
    ON notifications (deliver_at) WHERE status = 'scheduled' OR claim_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS notifications_created
    ON notifications (created_at);

CREATE TABLE IF NOT EXISTS notification_counts (
    user_id text   PRIMARY KEY,
    unread  bigint NOT NULL DEFAULT 0
);

INSERT INTO notification_counts (user_id, unread)
    SELECT user_id, count(*) FILTER (WHERE NOT is_read AND NOT is_dismissed
                                       AND status = 'queued')
    FROM notifications GROUP BY user_id
    ON CONFLICT (user_id) DO NOTHING;

CREATE OR REPLACE FUNCTION ns_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $ns_fn$
BEGIN
    IF current_setting('notisync.counts', true) = 'app' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO notification_counts AS c (user_id, unread)
            SELECT user_id, count(*) FILTER (WHERE NOT is_read AND NOT is_dismissed
                                               AND status = 'queued')
            FROM ns_new GROUP BY user_id ORDER BY user_id
            ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO notification_counts AS c (user_id, unread)
            SELECT user_id, sum(d) FROM (
                SELECT user_id, 1 AS d FROM ns_new
                 WHERE NOT is_read AND NOT is_dismissed AND status = 'queued'
                UNION ALL
                SELECT user_id, -1 FROM ns_old
                 WHERE NOT is_read AND NOT is_dismissed AND status = 'queued') x
            GROUP BY user_id HAVING sum(d) <> 0 ORDER BY user_id
            ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + excluded.unread;
    ELSE
        UPDATE notification_counts c SET unread = c.unread - x.n
            FROM (SELECT user_id, count(*) AS n FROM ns_old
                   WHERE NOT is_read AND NOT is_dismissed AND status = 'queued'
                   GROUP BY user_id) x
            WHERE c.user_id = x.user_id;
    END IF;
    RETURN NULL;
END
$ns_fn$;

DROP TRIGGER IF EXISTS notifications_counts_ins ON notifications;
CREATE TRIGGER notifications_counts_ins AFTER INSERT ON notifications
    REFERENCING NEW TABLE AS ns_new
    FOR EACH STATEMENT EXECUTE FUNCTION ns_counts_apply();
DROP TRIGGER IF EXISTS notifications_counts_upd ON notifications;
CREATE TRIGGER notifications_counts_upd AFTER UPDATE ON notifications
    REFERENCING OLD TABLE AS ns_old NEW TABLE AS ns_new
    FOR EACH STATEMENT EXECUTE FUNCTION ns_counts_apply();
DROP TRIGGER IF EXISTS notifications_counts_del ON notifications;
CREATE TRIGGER notifications_counts_del AFTER DELETE ON notifications
    REFERENCING OLD TABLE AS ns_old
    FOR EACH STATEMENT EXECUTE FUNCTION ns_counts_apply();
