-- ABAC: per-tenant policy overrides and break-glass grants.

-- Overrides of profiles/access/policy.json for this tenant (merged key by key over it).
ALTER TABLE tenants ADD COLUMN access_policy jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Emergency access a practitioner asserted for one patient, with the reason they gave; it
-- lapses at expires_at. Kept (append-only to the app role) as part of the record of who saw
-- what under which justification.
CREATE TABLE break_glass_grants (
    tenant_id       text        NOT NULL REFERENCES tenants (id),
    id              uuid        NOT NULL,
    practitioner_id text        NOT NULL,
    patient_id      text        NOT NULL,
    reason          text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    granted_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX break_glass_grants_lookup
    ON break_glass_grants (tenant_id, practitioner_id, patient_id, expires_at);

ALTER TABLE break_glass_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE break_glass_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON break_glass_grants
    USING (tenant_id = current_setting('hearth.tenant', true))
    WITH CHECK (tenant_id = current_setting('hearth.tenant', true));
GRANT SELECT, INSERT ON break_glass_grants TO hearth_app;
