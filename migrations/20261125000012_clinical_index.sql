-- Clinical content: the retrieval index (text chunks with full-text vectors and
-- embeddings), its outbox, cached summaries, AI invocations and their monthly usage.

-- Every change of a resource's current version, in the transaction that makes it: the
-- indexer turns these into chunks (and removes chunks of deleted resources).
CREATE TABLE clinical_outbox (
    tenant_id      text        NOT NULL,
    seq            bigint      GENERATED ALWAYS AS IDENTITY,
    resource_type  text        NOT NULL,
    resource_id    text        NOT NULL,
    version_id     bigint      NOT NULL,
    deleted        boolean     NOT NULL,
    queued_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

CREATE FUNCTION clinical_outbox_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO clinical_outbox (tenant_id, resource_type, resource_id, version_id, deleted)
    VALUES (NEW.tenant_id, NEW.resource_type, NEW.id, NEW.version_id, NEW.deleted);
    RETURN NULL;
END
$$;
-- On `resources` (the current pointer), which every write path moves: REST, Bundles,
-- HL7 v2, EHR sync, load — so no writer can forget the outbox.
CREATE TRIGGER clinical_outbox_enqueue AFTER INSERT OR UPDATE ON resources
    FOR EACH ROW EXECUTE FUNCTION clinical_outbox_enqueue();

-- Text of a resource: its readable rendering, and note sections. Replaced whole when the
-- resource changes; removed when it is deleted. `model`/`dim` say which embedder made
-- `embedding` (a change of model re-embeds). 512 dimensions: the local embedder's and the
-- one Hearth asks Titan Text Embeddings V2 for.
CREATE TABLE clinical_chunks (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    resource_type  text        NOT NULL,
    resource_id    text        NOT NULL,
    version_id     bigint      NOT NULL,
    patient_id     text,
    ordinal        integer     NOT NULL,
    section        text        NOT NULL,
    element        text,
    span_start     integer,
    span_end       integer,
    text           text        NOT NULL,
    tsv            tsvector    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
    model          text        NOT NULL,
    dim            integer     NOT NULL,
    embedding      vector(512) NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX clinical_chunks_resource ON clinical_chunks (tenant_id, resource_type, resource_id);
CREATE INDEX clinical_chunks_patient ON clinical_chunks (tenant_id, patient_id);
CREATE INDEX clinical_chunks_tsv ON clinical_chunks USING gin (tsv);
CREATE INDEX clinical_chunks_embedding ON clinical_chunks USING hnsw (embedding vector_cosine_ops);

-- A summary per patient, engine and data version (the patient's newest change).
CREATE TABLE clinical_summaries (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    patient_id     text        NOT NULL,
    engine         text        NOT NULL,
    viewer_key     text        NOT NULL,
    data_version   text        NOT NULL,
    summary        jsonb       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, patient_id, engine, viewer_key)
);

-- Every AI invocation: what the model was sent and what it said, for the security officer.
CREATE TABLE ai_invocations (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    id             uuid        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    purpose        text        NOT NULL,
    patient_id     text,
    agent          text,
    model_id       text        NOT NULL,
    system_prompt  text        NOT NULL,
    prompt         text        NOT NULL,
    chunk_ids      bigint[]    NOT NULL DEFAULT '{}',
    raw_output     text,
    verified_output jsonb,
    removed        integer,
    input_tokens   integer,
    output_tokens  integer,
    latency_ms     integer,
    outcome        text        NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX ai_invocations_at ON ai_invocations (tenant_id, at);

-- Tokens and invocations per tenant and month, against the tenant's quota.
CREATE TABLE ai_usage (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    month          date        NOT NULL,
    invocations    integer     NOT NULL DEFAULT 0,
    tokens         bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, month)
);

-- The tenant's AI settings: whether its Bedrock account is covered by a BAA (without it,
-- PHI is never sent), the engine, the monthly token quota, how doubtful sentences show.
ALTER TABLE tenants ADD COLUMN ai_settings jsonb NOT NULL DEFAULT '{}';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['clinical_outbox', 'clinical_chunks', 'clinical_summaries', 'ai_invocations', 'ai_usage'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, DELETE ON clinical_outbox TO hearth_app;
GRANT SELECT, INSERT, DELETE ON clinical_chunks TO hearth_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON clinical_summaries TO hearth_app;
-- Invocations are a record: inserted, then completed once; never deleted by the app.
GRANT SELECT, INSERT, UPDATE ON ai_invocations TO hearth_app;
GRANT SELECT, INSERT, UPDATE ON ai_usage TO hearth_app;

-- Tenants with queued changes, for the background indexer (runs as the app role, which
-- sees one tenant at a time): as the owner, visiting each tenant under RLS; ids only.
CREATE FUNCTION clinical_tenants_with_outbox() RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    t text;
    saved text := current_setting('hearth.tenant', true);
BEGIN
    FOR t IN SELECT id FROM tenants ORDER BY id LOOP
        PERFORM set_config('hearth.tenant', t, true);
        IF EXISTS (SELECT 1 FROM clinical_outbox o WHERE o.tenant_id = t) THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
    PERFORM set_config('hearth.tenant', coalesce(saved, ''), true);
END
$$;
REVOKE ALL ON FUNCTION clinical_tenants_with_outbox() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION clinical_tenants_with_outbox() TO hearth_app;
