-- Hotline relay schema v2: deadlines, escalations exactly once, webhook outbox.

-- One row per (notice, recipient, track): the frozen ladder and where it stands.
CREATE TABLE deadlines (
    notice_id   BLOB NOT NULL REFERENCES notices (notice_id),
    recipient   TEXT NOT NULL,
    track       TEXT NOT NULL,          -- 'ack' or 'response'
    sender      TEXT NOT NULL,
    severity    TEXT NOT NULL,
    status      TEXT NOT NULL,
    due_at      INTEGER NOT NULL,
    repeat_ms   INTEGER NOT NULL,
    max_level   INTEGER NOT NULL,
    level       INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER,                -- NULL once met, or after the last level
    met_at      INTEGER,
    PRIMARY KEY (notice_id, recipient, track)
) WITHOUT ROWID;
CREATE INDEX deadlines_next ON deadlines (next_at) WHERE next_at IS NOT NULL;
CREATE INDEX deadlines_open ON deadlines (due_at) WHERE met_at IS NULL;

-- Every escalation and resolution, once: the UNIQUE key is what makes it exactly once.
CREATE TABLE escalations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    notice_id   BLOB NOT NULL,
    recipient   TEXT NOT NULL,
    track       TEXT NOT NULL,
    level       INTEGER NOT NULL,
    kind        TEXT NOT NULL,          -- 'escalated' or 'resolved'
    at          INTEGER NOT NULL,
    statement   BLOB NOT NULL,          -- the relay-signed EscalationStatement
    contacts    TEXT NOT NULL DEFAULT '',  -- contact desks told, space-separated
    webhooks    TEXT NOT NULL DEFAULT '',  -- webhooks queued, space-separated
    logged      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (notice_id, recipient, track, level, kind)
);
CREATE INDEX escalations_unlogged ON escalations (id) WHERE logged = 0;
CREATE INDEX escalations_at ON escalations (at);

-- Webhook calls still to make (at least once, with an idempotency key).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    escalation_id   INTEGER NOT NULL REFERENCES escalations (id),
    webhook         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    done_at         INTEGER,
    failed_at       INTEGER,
    last_error      TEXT,
    UNIQUE (escalation_id, webhook)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE done_at IS NULL AND failed_at IS NULL;

ALTER TABLE events ADD COLUMN escalation_id INTEGER;

-- A row the readiness probe really rewrites (an unchanged row writes nothing to the WAL).
CREATE TABLE readiness (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO readiness (id, n) VALUES (1, 0);

-- Revocations received over the API (those in the home's revocations/ folder are loaded too).
CREATE TABLE revocations (
    desk      TEXT NOT NULL,
    ik_kid    BLOB NOT NULL,
    body      BLOB NOT NULL,
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (desk, ik_kid)
) WITHOUT ROWID;
