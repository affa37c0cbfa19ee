-- Foundation: tenants, versioned resources, per-tenant signing keys.
--
-- Tenancy invariant: every table carries tenant_id, has row-level security ENABLED and
-- FORCED (so even the owner role is filtered), and one policy that compares tenant_id with
-- the transaction's `hearth.tenant` setting. The server connects as a member of
-- `hearth_app`, which owns nothing and cannot bypass RLS; it sets the tenant per
-- transaction with set_config('hearth.tenant', $1, true) (i.e. SET LOCAL).
-- With no tenant set, current_setting(..., true) is NULL or '' and matches no row.
--
-- The role `hearth_app` must exist before migrating (scripts/db.sh or terraform create it).

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Every version of every resource, append-only: a delete is a version with deleted = true.
CREATE TABLE resource_versions (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    resource_type  text        NOT NULL,
    id             text        NOT NULL,
    version_id     bigint      NOT NULL CHECK (version_id > 0),
    last_updated   timestamptz NOT NULL,
    deleted        boolean     NOT NULL,
    -- The JSON Hearth accepted (normalised, with id and meta set by the server), served as is.
    -- NULL exactly for delete versions.
    content        text        CHECK ((content IS NULL) = deleted),
    PRIMARY KEY (tenant_id, resource_type, id, version_id)
);

CREATE INDEX resource_versions_type_history
    ON resource_versions (tenant_id, resource_type, last_updated DESC, id, version_id);

-- The current version of each resource (a pointer into resource_versions).
CREATE TABLE resources (
    tenant_id      text        NOT NULL,
    resource_type  text        NOT NULL,
    id             text        NOT NULL,
    version_id     bigint      NOT NULL,
    last_updated   timestamptz NOT NULL,
    deleted        boolean     NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id),
    FOREIGN KEY (tenant_id, resource_type, id, version_id)
        REFERENCES resource_versions (tenant_id, resource_type, id, version_id)
);

-- Keys Hearth signs its own access tokens with; generated on first use per tenant.
CREATE TABLE tenant_signing_keys (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    kid              text        NOT NULL,
    alg              text        NOT NULL,
    private_key_pem  text        NOT NULL,
    public_jwk       jsonb       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kid)
);

-- Row-level security: one policy per table, forced for every role but superusers.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['resource_versions', 'resources', 'tenant_signing_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = current_setting('hearth.tenant', true))
    WITH CHECK (id = current_setting('hearth.tenant', true));
-- The migrating (owner) role administers tenants (`hearth tenant list`); the app role never
-- sees a tenant other than the one its transaction is set to.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY tenant_admin ON tenants TO %I USING (true) WITH CHECK (true)',
                   current_user);
END
$$;

-- The app role: what the server needs and nothing more. History is append-only to it.
GRANT SELECT, INSERT ON tenants TO hearth_app;
GRANT SELECT, INSERT ON resource_versions TO hearth_app;
GRANT SELECT, INSERT, UPDATE ON resources TO hearth_app;
GRANT SELECT, INSERT ON tenant_signing_keys TO hearth_app;
-- Readiness compares the applied migrations with the binary's (no tenant data in it).
GRANT SELECT ON _sqlx_migrations TO hearth_app;
