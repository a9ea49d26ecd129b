-- Hotline relay schema v1 (SQLite).
CREATE TABLE notices (
    notice_id    BLOB PRIMARY KEY,
    sender       TEXT NOT NULL,
    digest       BLOB NOT NULL,
    severity     TEXT NOT NULL,
    status       TEXT NOT NULL,
    in_reply_to  BLOB,
    created_at   INTEGER NOT NULL,
    accepted_at  INTEGER NOT NULL,
    envelope     BLOB NOT NULL,
    attestation  BLOB NOT NULL,
    sender_cert  BLOB NOT NULL,
    policy       BLOB
);

CREATE TABLE deliveries (
    notice_id            BLOB NOT NULL REFERENCES notices (notice_id),
    recipient            TEXT NOT NULL,
    sender               TEXT NOT NULL,
    signer_cert          BLOB,
    delivered_at         INTEGER,
    receipt              BLOB,
    receipt_attestation  BLOB,
    acked_at             INTEGER,
    ack                  BLOB,
    ack_attestation      BLOB,
    PRIMARY KEY (notice_id, recipient)
) WITHOUT ROWID;
CREATE INDEX deliveries_unacked_by_sender ON deliveries (sender) WHERE acked_at IS NULL;

-- Each desk's ordered stream: what to push, and the cursor clients resume from.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    desk       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    notice_id  BLOB NOT NULL,
    recipient  TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_by_desk ON events (desk, seq);

-- The directory of desk cards the relay has seen (verified at login).
CREATE TABLE cards (
    desk            TEXT PRIMARY KEY,
    card            BLOB NOT NULL,
    cert_not_after  INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
