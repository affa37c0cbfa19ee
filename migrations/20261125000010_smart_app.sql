-- The SMART app: the EHRs a tenant registered Hearth with, Hearth's client key for them,
-- launches in flight, browser sessions, and how far each patient's record was synced.
-- Every table is tenant-scoped with forced row-level security.

-- One row per EHR (FHIR base = the `iss` of its launches). A launch names only `iss`, so
-- the tenant is found by it: `iss` is unique across tenants, and a second policy lets a
-- transaction that states the exact `iss` (hearth.launch_iss) read that one row.
CREATE TABLE ehr_registrations (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    id               text        NOT NULL CHECK (id ~ '^[a-z0-9-]{1,63}$'),
    name             text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    iss              text        NOT NULL UNIQUE CHECK (iss ~ '^https?://[^\s#?]+$'),
    client_id        text        NOT NULL CHECK (length(client_id) BETWEEN 1 AND 500),
    client_auth      text        NOT NULL CHECK (client_auth IN ('public', 'private-key-jwt')),
    scopes           text        NOT NULL CHECK (length(scopes) BETWEEN 1 AND 4000),
    standalone_scopes text       NOT NULL CHECK (length(standalone_scopes) BETWEEN 1 AND 4000),
    frame_ancestors  text[]      NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Hearth's key pair for `private_key_jwt` at the tenant's EHRs (ES384); the public half is
-- published at /app/{tenant}/jwks.
CREATE TABLE app_client_keys (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    kid              text        NOT NULL,
    alg              text        NOT NULL,
    private_key_pem  text        NOT NULL,
    public_jwk       jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kid)
);

-- A launch between the redirect to the EHR and the callback: found by the hash of its
-- `state`, bound to the browser by the hash of a cookie, used once. `secrets` is the
-- AES-256-GCM sealed PKCE verifier and OIDC nonce.
CREATE TABLE app_launches (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    state_hash       bytea       NOT NULL,
    browser_hash     bytea       NOT NULL,
    registration_id  text        NOT NULL,
    standalone       boolean     NOT NULL,
    secrets          bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, state_hash),
    FOREIGN KEY (tenant_id, registration_id) REFERENCES ehr_registrations (tenant_id, id) ON DELETE CASCADE
);

-- A signed-in clinician's session. The browser holds only a random token (its hash is
-- here); the EHR's tokens are sealed in `secrets` with a key that is not in the database.
CREATE TABLE app_sessions (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    id               uuid        NOT NULL,
    token_hash       bytea       NOT NULL,
    registration_id  text        NOT NULL,
    patient_id       text        NOT NULL,
    encounter_id     text,
    fhir_user        text,
    user_display     text,
    scopes           text        NOT NULL,
    need_patient_banner boolean  NOT NULL DEFAULT false,
    smart_style      jsonb,
    csrf             text        NOT NULL,
    secrets          bytea       NOT NULL,
    sync_report      jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    idle_timeout_secs integer    NOT NULL CHECK (idle_timeout_secs > 0),
    expires_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    end_reason       text CHECK (end_reason IN ('logout', 'inactive', 'expired', 'relaunch')),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, registration_id) REFERENCES ehr_registrations (tenant_id, id) ON DELETE CASCADE
);

-- How far a patient's record was synced from an EHR: the next sync asks for
-- `_lastUpdated=ge{synced_through}`.
CREATE TABLE ehr_sync_marks (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    registration_id  text        NOT NULL,
    patient_id       text        NOT NULL,
    synced_through   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, registration_id, patient_id),
    FOREIGN KEY (tenant_id, registration_id) REFERENCES ehr_registrations (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['ehr_registrations', 'app_client_keys', 'app_launches', 'app_sessions', 'ehr_sync_marks'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

-- A launch's tenant, by its exact `iss` (read-only, one row).
CREATE POLICY launch_by_iss ON ehr_registrations FOR SELECT
    USING (iss = current_setting('hearth.launch_iss', true));

GRANT SELECT, INSERT, UPDATE, DELETE ON ehr_registrations TO hearth_app;
GRANT SELECT, INSERT ON app_client_keys TO hearth_app;
GRANT SELECT, INSERT, DELETE ON app_launches TO hearth_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON app_sessions TO hearth_app;
GRANT SELECT, INSERT, UPDATE ON ehr_sync_marks TO hearth_app;

-- A launch in a patient's context is the EHR vouching that this practitioner cares for
-- this patient, for that session: a relationship of its own kind, ending with the session.
ALTER TABLE care_relationships DROP CONSTRAINT care_relationships_kind_check;
ALTER TABLE care_relationships ADD CONSTRAINT care_relationships_kind_check
    CHECK (kind IN ('encounter', 'care-team', 'ehr-launch'));
ALTER TABLE care_relationships DROP CONSTRAINT care_relationships_source_type_check;
ALTER TABLE care_relationships ADD CONSTRAINT care_relationships_source_type_check
    CHECK (source_type IN ('Encounter', 'CareTeam', 'AppSession'));
-- A session's relationship ends when the session does (logout, inactivity).
GRANT UPDATE ON care_relationships TO hearth_app;
