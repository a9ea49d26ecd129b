-- Hotline relay schema v4: a recipient's signed rejection of a notice it could not open.
-- (Independent of v3: the loader applies every numbered file not yet applied, in order.)
ALTER TABLE deliveries ADD COLUMN rejected_at INTEGER;
ALTER TABLE deliveries ADD COLUMN rejection BLOB;
ALTER TABLE deliveries ADD COLUMN rejection_attestation BLOB;
-- The rejection's reason code (REJECTION_REASONS), for operators' views and webhooks.
ALTER TABLE deliveries ADD COLUMN rejection_reason TEXT;
