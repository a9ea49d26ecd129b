-- Hotline relay schema v7: nonces of operator web login links already used.
-- (Independent of other versions.) A row is kept until the link's own expiry, so a link
-- cannot be used twice, also across a restart. Expired rows are deleted as new ones come.
CREATE TABLE login_nonces (
    nonce BLOB PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_nonces_expiry ON login_nonces (expires_at)
