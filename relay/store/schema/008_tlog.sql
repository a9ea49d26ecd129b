-- Hotline relay schema v8: the relay's verifiable log (PROTOCOL.md section 20).
-- (Independent of other versions: the loader applies every numbered file not yet applied.)
--
-- One leaf per statement the relay signs or records, appended by the triggers below in the
-- same transaction (and savepoint) as the statement itself: no statement without its leaf,
-- none twice, and no gap (idx is max + 1 under the single writer; the primary key refuses
-- a second leaf at an index). The log entry of leaf idx is SHA-256(statement): the
-- statement's exact signed bytes stay here, off the public tiles.
CREATE TABLE tlog_leaves (
    idx        INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,   -- accepted | delivered | acknowledged | rejected |
                                -- escalated | resolved | revocation | relay_key
    statement  BLOB NOT NULL
);
CREATE INDEX tlog_leaves_by_statement ON tlog_leaves (statement);

-- Every complete-subtree hash of the tree (level 0 = leaf hashes), written by the
-- checkpointer as it extends the tree; tiles and proofs are read from here.
CREATE TABLE tlog_hashes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
-- Leaf hashes by value: which leaf records a statement (GET /v1/log/index/...).
CREATE INDEX tlog_leaf_hashes ON tlog_hashes (hash) WHERE level = 0;

-- Signed checkpoints, with the cosignatures the witnesses returned (note = the signed
-- note as served at /checkpoint).
CREATE TABLE tlog_checkpoints (
    size        INTEGER PRIMARY KEY,
    root        BLOB NOT NULL,
    note        BLOB NOT NULL,
    signed_at   INTEGER NOT NULL,
    cosigned    INTEGER NOT NULL DEFAULT 0   -- witnesses whose cosignature it carries
);

CREATE TRIGGER tlog_accepted AFTER INSERT ON notices BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), 'accepted', NEW.attestation FROM tlog_leaves;
END;

CREATE TRIGGER tlog_delivered AFTER UPDATE OF receipt_attestation ON deliveries
WHEN OLD.receipt_attestation IS NULL AND NEW.receipt_attestation IS NOT NULL BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), 'delivered', NEW.receipt_attestation FROM tlog_leaves;
END;

CREATE TRIGGER tlog_acknowledged AFTER UPDATE OF ack_attestation ON deliveries
WHEN OLD.ack_attestation IS NULL AND NEW.ack_attestation IS NOT NULL BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), 'acknowledged', NEW.ack_attestation FROM tlog_leaves;
END;

CREATE TRIGGER tlog_rejected AFTER UPDATE OF rejection_attestation ON deliveries
WHEN OLD.rejection_attestation IS NULL AND NEW.rejection_attestation IS NOT NULL BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), 'rejected', NEW.rejection_attestation FROM tlog_leaves;
END;

CREATE TRIGGER tlog_escalation AFTER INSERT ON escalations BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), NEW.kind, NEW.statement FROM tlog_leaves;
END;

CREATE TRIGGER tlog_revocation AFTER INSERT ON revocations BEGIN
    INSERT INTO tlog_leaves (idx, kind, statement)
    SELECT coalesce(max(idx) + 1, 0), 'revocation', NEW.body FROM tlog_leaves;
END;

-- A leaf is never rewritten or removed by the relay (an edit after the fact is the attack
-- the witnesses and clients catch; these make an accidental one fail loudly).
CREATE TRIGGER tlog_leaves_no_update BEFORE UPDATE ON tlog_leaves BEGIN
    SELECT RAISE(ABORT, 'tlog_leaves is append-only');
END;
CREATE TRIGGER tlog_leaves_no_delete BEFORE DELETE ON tlog_leaves BEGIN
    SELECT RAISE(ABORT, 'tlog_leaves is append-only');
END;
