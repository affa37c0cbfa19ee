-- Every HL7 v2 message received over MLLP, stored before it is acknowledged: accepted ones
-- with the resources they produced (same transaction), failed (AE) and rejected (AR) ones
-- with the reason, for listing and replay. `ack` is what was answered, so a duplicate gets
-- the original acknowledgement back.

CREATE TABLE hl7_messages (
    tenant_id            text        NOT NULL REFERENCES tenants (id),
    id                   uuid        NOT NULL,
    received_at          timestamptz NOT NULL,
    listener             text        NOT NULL,
    sending_application  text,
    sending_facility     text,
    control_id           text,
    message_type         text,
    trigger_event        text,
    status               text        NOT NULL CHECK (status IN ('accepted', 'error', 'rejected')),
    ack_code             text,
    ack                  bytea,
    -- Why it failed: HL7 error codes and locations, never message content.
    reason               text,
    raw                  bytea       NOT NULL,
    attempts             integer     NOT NULL DEFAULT 1,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Duplicate detection: same tenant, MSH-3, MSH-4, MSH-10. Rejected messages (unknown
-- sender, unsupported type) do not count, so a resend after the feed is fixed is processed.
CREATE UNIQUE INDEX hl7_messages_dedup
    ON hl7_messages (tenant_id, coalesce(sending_application, ''), coalesce(sending_facility, ''), control_id)
    WHERE control_id IS NOT NULL AND status <> 'rejected';
CREATE INDEX hl7_messages_failed ON hl7_messages (tenant_id, received_at) WHERE status <> 'accepted';

ALTER TABLE hl7_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE hl7_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON hl7_messages
    USING (tenant_id = current_setting('hearth.tenant', true))
    WITH CHECK (tenant_id = current_setting('hearth.tenant', true));
-- UPDATE: a replay records its new outcome on the same row.
GRANT SELECT, INSERT, UPDATE ON hl7_messages TO hearth_app;
