-- 0001_init: the tables of DESIGN.md.  Every statement is idempotent so a
-- half-applied run (crash between statements) can be re-run.

CREATE TABLE IF NOT EXISTS devices (
    user_id     text        NOT NULL,
    device_id   text        NOT NULL,
    device_name text,
    platform    text,
    first_seen  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE IF NOT EXISTS notifications (
    id            uuid        PRIMARY KEY,
    user_id       text        NOT NULL,
    app_name      text        NOT NULL,
    title         text        NOT NULL,
    body          text        NOT NULL,
    category      text,
    priority      smallint    NOT NULL DEFAULT 0,
    source_device text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    is_read       boolean     NOT NULL DEFAULT false,
    is_dismissed  boolean     NOT NULL DEFAULT false,
    read_at       timestamptz,
    dismissed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_user_created
    ON notifications (user_id, created_at DESC);

CREATE TABLE IF NOT EXISTS comments (
    id         uuid        PRIMARY KEY,
    post_id    text        NOT NULL,
    user_id    text        NOT NULL,
    username   text        NOT NULL,
    content    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS comments_post_created
    ON comments (post_id, created_at);
