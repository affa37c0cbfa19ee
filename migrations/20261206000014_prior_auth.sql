-- Prior-authorization packets: the draft QuestionnaireResponse Hearth extracted, each
-- reviewer decision, the approval and the PAS Claim Bundle, the submission to the payer.
-- The packet row holds the current state; `prior_auth_events` every version of it, with
-- who did what (append-only for the app role).

CREATE TABLE prior_auth_packets (
    tenant_id    text        NOT NULL REFERENCES tenants (id),
    id           uuid        NOT NULL,
    patient_id   text        NOT NULL,
    order_ref    text        NOT NULL,
    rule_set     text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('draft', 'approved', 'rejected', 'submitted')),
    response     jsonb       NOT NULL,
    claim        jsonb,
    submission   jsonb,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    version      integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX prior_auth_packets_patient ON prior_auth_packets (tenant_id, patient_id, created_at);

CREATE TABLE prior_auth_events (
    tenant_id  text        NOT NULL,
    packet_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text        NOT NULL,
    -- drafted, accepted, edited, rejected-answer, approved, rejected, exported, submitted
    action     text        NOT NULL,
    link_id    text,
    detail     text,
    status     text        NOT NULL,
    response   jsonb       NOT NULL,
    PRIMARY KEY (tenant_id, packet_id, version),
    FOREIGN KEY (tenant_id, packet_id) REFERENCES prior_auth_packets (tenant_id, id)
);

-- Where approved packets may be submitted: {"payerSubmitUrl": "https://payer.example/fhir"}.
ALTER TABLE tenants ADD COLUMN prior_auth_settings jsonb NOT NULL DEFAULT '{}';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['prior_auth_packets', 'prior_auth_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON prior_auth_packets TO hearth_app;
-- Versions are a record: inserted, never changed or removed by the app.
GRANT SELECT, INSERT ON prior_auth_events TO hearth_app;
