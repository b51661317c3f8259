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
-- row trigger below, which does not fire for the marked sessions.

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
-- Retention's scan.  BRIN: created_at follows the insert order, and a
-- BRIN index costs next to nothing per insert (a B-tree here cost the
-- producer path an index entry per notification).
CREATE INDEX IF NOT EXISTS notifications_created
    ON notifications USING brin (created_at);

CREATE TABLE IF NOT EXISTS notification_counts (
    user_id text   PRIMARY KEY,
    unread  bigint NOT NULL DEFAULT 0
);

INSERT INTO notification_counts (user_id, unread)
    SELECT user_id, count(*) FILTER (WHERE NOT is_read AND NOT is_dismissed
                                       AND status = 'queued')
    FROM notifications GROUP BY user_id
    ON CONFLICT (user_id) DO NOTHING;

-- One row trigger for every change.  Its WHEN is evaluated as each row
-- changes and is false for this version's sessions, so for them no trigger
-- event is queued at all (a statement trigger with transition tables would
-- copy every changed row even when its function returns at once).
CREATE OR REPLACE FUNCTION ns_counts_row() RETURNS trigger
LANGUAGE plpgsql AS $ns_fn$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.status = 'queued' AND NOT OLD.is_read
       AND NOT OLD.is_dismissed THEN
        INSERT INTO notification_counts AS c (user_id, unread)
            VALUES (OLD.user_id, -1)
            ON CONFLICT (user_id) DO UPDATE SET unread = c.unread - 1;
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'queued' AND NOT NEW.is_read
       AND NOT NEW.is_dismissed THEN
        INSERT INTO notification_counts AS c (user_id, unread)
            VALUES (NEW.user_id, 1)
            ON CONFLICT (user_id) DO UPDATE SET unread = c.unread + 1;
    END IF;
    RETURN NULL;
END
$ns_fn$;

DROP TRIGGER IF EXISTS notifications_counts ON notifications;
CREATE TRIGGER notifications_counts
    AFTER INSERT OR UPDATE OR DELETE ON notifications
    FOR EACH ROW
    WHEN (current_setting('notisync.counts', true) IS DISTINCT FROM 'app')
    EXECUTE FUNCTION ns_counts_row();
