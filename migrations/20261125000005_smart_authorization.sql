-- SMART authorization: Backend Services clients, the assertion replay guard, revoked Hearth
-- tokens and the identity providers a tenant trusts for user-facing apps.
-- Same tenancy invariant as every table: tenant_id, RLS enabled and forced, one policy.

-- A client registered for SMART Backend Services (client_credentials + private_key_jwt).
-- Its public keys are either registered inline (`jwks`) or fetched from `jwks_url`.
CREATE TABLE oauth_clients (
    tenant_id   text        NOT NULL REFERENCES tenants (id),
    client_id   text        NOT NULL CHECK (client_id ~ '^[A-Za-z0-9._~-]{1,128}$'),
    name        text        NOT NULL DEFAULT '',
    jwks        jsonb,
    jwks_url    text,
    -- The most this client may be granted, as SMART scopes separated by spaces.
    scopes      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    disabled    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, client_id),
    CHECK ((jwks IS NULL) <> (jwks_url IS NULL))
);

-- Every accepted client assertion's jti, kept until the assertion expires: a jti is never
-- accepted twice within its lifetime (RFC 7523 3, SMART Backend Services).
CREATE TABLE oauth_assertion_jtis (
    tenant_id   text        NOT NULL REFERENCES tenants (id),
    client_id   text        NOT NULL,
    jti         text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, client_id, jti)
);
CREATE INDEX oauth_assertion_jtis_expiry ON oauth_assertion_jtis (tenant_id, expires_at);

-- Hearth-issued access tokens revoked before their expiry (RFC 7009), by jti.
CREATE TABLE oauth_revoked_tokens (
    tenant_id   text        NOT NULL REFERENCES tenants (id),
    jti         text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, jti)
);

-- Identity providers whose access tokens a tenant accepts (user-facing apps). The issuer
-- is the one the provider's OIDC discovery document names.
CREATE TABLE trusted_issuers (
    tenant_id       text        NOT NULL REFERENCES tenants (id),
    issuer          text        NOT NULL,
    discovery_url   text        NOT NULL,
    -- The `aud` tokens must carry; NULL means the tenant's FHIR base URL.
    audience        text,
    -- The claim naming the user as a FHIR reference (Practitioner/…, Patient/…).
    fhir_user_claim text        NOT NULL DEFAULT 'fhirUser',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, issuer)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['oauth_clients', 'oauth_assertion_jtis', 'oauth_revoked_tokens',
                             'trusted_issuers'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE ON oauth_clients TO hearth_app;
GRANT SELECT, INSERT, DELETE ON oauth_assertion_jtis TO hearth_app;
GRANT SELECT, INSERT ON oauth_revoked_tokens TO hearth_app;
GRANT SELECT, INSERT, UPDATE ON trusted_issuers TO hearth_app;
