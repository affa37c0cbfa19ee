-- Bulk Data export jobs ($export) and the files they write. A job is its request, the
-- caller the access decision is made for, and its progress: the type it is on, the page
-- token of the next page, and the bytes each file holds. Progress is saved after every
-- page, so a job interrupted by a restart resumes where it was (files are cut back to the
-- saved length), never from zero.

CREATE TABLE bulk_jobs (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    id               uuid        NOT NULL,
    -- Who may poll, download and cancel: the token's subject (a client id for Backend
    -- Services).
    owner            text        NOT NULL,
    -- What `access::decide` needs to decide again when the job runs (scopes, client,
    -- patient group, user, purpose of use).
    caller           jsonb       NOT NULL,
    request_url      text        NOT NULL,
    level            text        NOT NULL CHECK (level IN ('system', 'patient', 'group')),
    group_id         text,
    types            text[]      NOT NULL,
    since            timestamptz,
    -- {"Observation": ["category=laboratory", ...]}: per type, criteria OR-ed.
    type_filters     jsonb       NOT NULL DEFAULT '{}',
    output_format    text        NOT NULL,
    transaction_time timestamptz NOT NULL,
    status           text        NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    -- Progress: index into `types`, the next page of that type, resources written.
    type_index       integer     NOT NULL DEFAULT 0,
    page_token       text,
    exported         bigint      NOT NULL DEFAULT 0,
    -- Starts (1 = never interrupted) and what had been exported when the last one began.
    attempts         integer     NOT NULL DEFAULT 0,
    resumed_from     bigint,
    lease_until      timestamptz,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    expires_at       timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX bulk_jobs_status ON bulk_jobs (tenant_id, status);

-- One NDJSON file per type, split into parts at a size. `bytes`/`lines` are what is
-- durable; a part being written is cut back to `bytes` when its job resumes.
CREATE TABLE bulk_files (
    tenant_id      text    NOT NULL,
    job_id         uuid    NOT NULL,
    seq            integer NOT NULL,
    resource_type  text    NOT NULL,
    part           integer NOT NULL,
    location       text    NOT NULL,
    lines          bigint  NOT NULL DEFAULT 0,
    bytes          bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, job_id, seq),
    FOREIGN KEY (tenant_id, job_id) REFERENCES bulk_jobs (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['bulk_jobs', 'bulk_files'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON bulk_jobs TO hearth_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON bulk_files TO hearth_app;

-- Tenants with export work (a job to start or resume, or one to clean up), for the
-- background exporter, which runs as the app role and sees one tenant at a time.
CREATE FUNCTION bulk_tenants_with_work() RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    t text;
    saved text := current_setting('hearth.tenant', true);
BEGIN
    FOR t IN SELECT id FROM tenants ORDER BY id LOOP
        PERFORM set_config('hearth.tenant', t, true);
        IF EXISTS (SELECT 1 FROM bulk_jobs j WHERE j.tenant_id = t
                      AND (j.status = 'queued'
                           OR (j.status = 'running' AND (j.lease_until IS NULL OR j.lease_until < now()))
                           OR j.expires_at < now())) THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
    PERFORM set_config('hearth.tenant', coalesce(saved, ''), true);
END
$$;
REVOKE ALL ON FUNCTION bulk_tenants_with_work() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulk_tenants_with_work() TO hearth_app;
