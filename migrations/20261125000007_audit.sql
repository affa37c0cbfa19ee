-- The tamper-evident audit log, served as FHIR AuditEvent: who did what to which patient's
-- data, when, why and from where (src/audit/).
--
--   audit_events      one row per event, written by the request path in ONE INSERT: inside
--                     the change's own transaction for writes, in its own transaction before
--                     the response for reads. Append-only for everyone.
--   audit_chain       the hash chain over the events, appended off the request path by the
--                     sealer (audit::seal): link n is hash_n = SHA-256(hash_{n-1} ||
--                     canonical(event)), hash_0 = 32 zero bytes (or the latest anchor's hash).
--                     Its order is `position`, not the events' `seq`: an event whose
--                     transaction commits late is sealed later. The canonical form is
--                     documented in src/audit/chain.rs. Append-only for everyone.
--   audit_anchors     where a retention purge cut the chain: the last purged position and its
--                     hash, so what remains still verifies. Written by the maintenance path
--                     only.
--   audit_seal_state  the sealer's low-water mark (bookkeeping, not evidence).
--
-- Append-only: triggers refuse UPDATE, DELETE and TRUNCATE of audit_events, audit_chain and
-- audit_anchors (and INSERT into audit_anchors) for every role, the owner included, unless
-- the session takes the maintenance path, which is also the only way retention purges run
-- (`hearth audit purge`):
--
--     -- connected as a role that is a member of hearth_audit_maintainer (with INHERIT)
--     BEGIN;
--     SET LOCAL hearth.tenant = '<tenant>';
--     SET LOCAL hearth.audit_maintenance = 'on';
--     ...
--     COMMIT;
--
-- The role hearth_audit_maintainer (NOLOGIN) is created here when the migrating role may
-- create roles; otherwise a DBA creates it (`CREATE ROLE hearth_audit_maintainer NOLOGIN`).
-- Nobody is a member by default, not even the owner: grant it to the operator role for the
-- time of a purge (`GRANT hearth_audit_maintainer TO hearth_owner`) and revoke it after.
-- Without the role nobody can take the path. The triggers are a guard rail against mistakes
-- and a compromised app role; a table owner or superuser can still disable triggers, which
-- is what the hash chain is for: `hearth audit verify` finds any change to a sealed event.
--
-- Same tenancy invariant as every table: tenant_id, RLS enabled and forced, one policy.

DO $$
BEGIN
    IF to_regrole('hearth_audit_maintainer') IS NULL THEN
        IF (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user) THEN
            CREATE ROLE hearth_audit_maintainer NOLOGIN;
        ELSE
            RAISE NOTICE 'role hearth_audit_maintainer does not exist and % cannot create it: audit maintenance (purges) stays impossible until a DBA creates it', current_user;
        END IF;
    END IF;
END
$$;

-- The global order of insertion. A transaction takes its xid BEFORE its seq (see
-- audit_next_seq), so the sealer can tell when no transaction can still commit an event
-- below a given seq (audit::chain explains the low-water mark).
CREATE SEQUENCE audit_events_seq AS bigint;

CREATE FUNCTION audit_next_seq() RETURNS bigint
    LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('audit_events_seq');
END
$$;

-- Entity references without their version: `Observation/1/_history/2` -> `Observation/1`,
-- for the `entity` search parameter.
CREATE FUNCTION audit_entity_keys(entities text[]) RETURNS text[]
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN ARRAY(SELECT regexp_replace(e, '/_history/.*$', '') FROM unnest(entities) AS e);

CREATE TABLE audit_events (
    seq                 bigint      NOT NULL DEFAULT audit_next_seq(),
    tenant_id           text        NOT NULL REFERENCES tenants (id),
    -- The AuditEvent id.
    id                  uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- The database's clock at the insert (the app role cannot set it).
    recorded            timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- What happened: a FHIR restful-interaction code or a Hearth event code.
    event               text        NOT NULL CHECK (event ~ '^[a-z0-9-]{1,64}$'),
    action              text        NOT NULL CHECK (action IN ('C', 'R', 'U', 'D', 'E')),
    outcome             smallint    NOT NULL CHECK (outcome IN (0, 4, 8, 12)),
    outcome_text        text,
    -- v3 PurposeOfUse code.
    purpose             text,
    -- The caller (all NULL when unauthenticated): the user as a FHIR reference, the OAuth
    -- client, the token's sub and issuer, whom the user acted for.
    agent_who           text,
    agent_client_id     text,
    agent_subject       text,
    agent_issuer        text,
    agent_on_behalf_of  text,
    source_ip           text,
    user_agent          text,
    request_id          text,
    -- Patient ids (not references) and resources ("Type/id" or "Type/id/_history/v").
    patients            text[]      NOT NULL DEFAULT '{}',
    entities            text[]      NOT NULL DEFAULT '{}',
    -- The search as received, for search events.
    query               text,
    -- The access decision's reasons.
    reasons             text[]      NOT NULL DEFAULT '{}',
    high_severity       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, id),
    CHECK ((agent_subject IS NULL) = (agent_issuer IS NULL)),
    CHECK (agent_subject IS NOT NULL
           OR (agent_who IS NULL AND agent_client_id IS NULL AND agent_on_behalf_of IS NULL)),
    -- One-dimensional, no NULL elements: the canonical form has no place for either.
    CHECK (coalesce(array_ndims(patients), 1) = 1 AND array_position(patients, NULL) IS NULL),
    CHECK (coalesce(array_ndims(entities), 1) = 1 AND array_position(entities, NULL) IS NULL),
    CHECK (coalesce(array_ndims(reasons), 1) = 1 AND array_position(reasons, NULL) IS NULL)
);
ALTER SEQUENCE audit_events_seq OWNED BY audit_events.seq;

-- Search parameters (AuditEvent?patient=&agent=&date=&entity=&outcome=); results come
-- newest first (seq DESC), paged by seq.
CREATE INDEX audit_events_recorded ON audit_events (tenant_id, recorded);
CREATE INDEX audit_events_patients ON audit_events USING gin (patients);
CREATE INDEX audit_events_entities ON audit_events USING gin (audit_entity_keys(entities));
CREATE INDEX audit_events_agent_who ON audit_events (tenant_id, agent_who, seq)
    WHERE agent_who IS NOT NULL;
CREATE INDEX audit_events_agent_client ON audit_events (tenant_id, agent_client_id, seq)
    WHERE agent_client_id IS NOT NULL;
CREATE INDEX audit_events_agent_subject ON audit_events (tenant_id, agent_subject, seq)
    WHERE agent_subject IS NOT NULL;
CREATE INDEX audit_events_failures ON audit_events (tenant_id, seq) WHERE outcome <> 0;

CREATE TABLE audit_chain (
    tenant_id   text    NOT NULL REFERENCES tenants (id),
    position    bigint  NOT NULL CHECK (position > 0),
    event_seq   bigint  NOT NULL,
    hash        bytea   NOT NULL CHECK (length(hash) = 32),
    prev_hash   bytea   NOT NULL CHECK (length(prev_hash) = 32),
    PRIMARY KEY (tenant_id, position),
    UNIQUE (tenant_id, event_seq)
);

CREATE TABLE audit_anchors (
    tenant_id       text        NOT NULL REFERENCES tenants (id),
    -- The last purged position and its hash: position + 1 links to it.
    position        bigint      NOT NULL CHECK (position > 0),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    purged_events   bigint      NOT NULL,
    purged_before   timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, position)
);

CREATE TABLE audit_seal_state (
    tenant_id    text   PRIMARY KEY REFERENCES tenants (id),
    -- Every event with seq <= floor_seq is sealed, or can never become visible.
    floor_seq    bigint NOT NULL,
    -- The highest seq visible at a seal, and that seal's xid: once every transaction older
    -- than pending_xid has ended, floor_seq may rise to pending_seq.
    pending_seq  bigint,
    pending_xid  xid8,
    CHECK ((pending_seq IS NULL) = (pending_xid IS NULL))
);

-- The append-only guard. Passes only on the maintenance path: hearth.audit_maintenance =
-- 'on' in a session whose role has the privileges of hearth_audit_maintainer.
CREATE FUNCTION audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('hearth.audit_maintenance', true) = 'on' THEN
        IF to_regrole('hearth_audit_maintainer') IS NOT NULL THEN
            IF pg_has_role(current_user, 'hearth_audit_maintainer', 'USAGE') THEN
                IF TG_LEVEL = 'STATEMENT' THEN
                    RETURN NULL;
                ELSIF TG_OP = 'DELETE' THEN
                    RETURN OLD;
                ELSE
                    RETURN NEW;
                END IF;
            END IF;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'retention purges take the maintenance path (see migration 20261125000007_audit.sql)';
END
$$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_append_only BEFORE INSERT OR UPDATE OR DELETE ON audit_anchors
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_anchors_no_truncate BEFORE TRUNCATE ON audit_anchors
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_events', 'audit_chain', 'audit_anchors',
                             'audit_seal_state'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
    END LOOP;
END
$$;

-- The tenants with events above their low-water mark that are not sealed yet, for the
-- background sealer of `hearth serve`. The sealer runs as the app role, which sees one tenant
-- at a time (and no tenant list), so this runs as the owner: it visits each tenant under
-- RLS by setting hearth.tenant in turn, and returns ids only.
CREATE FUNCTION audit_unsealed_tenants() RETURNS SETOF text
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
DECLARE
    t text;
    saved text := current_setting('hearth.tenant', true);
BEGIN
    FOR t IN SELECT id FROM tenants ORDER BY id LOOP
        PERFORM set_config('hearth.tenant', t, true);
        IF EXISTS (
            SELECT 1 FROM audit_events e
             WHERE e.tenant_id = t
               AND e.seq > coalesce((SELECT s.floor_seq FROM audit_seal_state s
                                      WHERE s.tenant_id = t), 0)
               AND NOT EXISTS (SELECT 1 FROM audit_chain c
                                WHERE c.tenant_id = t AND c.event_seq = e.seq)) THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
    PERFORM set_config('hearth.tenant', coalesce(saved, ''), true);
END
$$;
REVOKE ALL ON FUNCTION audit_unsealed_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_unsealed_tenants() TO hearth_app;

-- The app role records events (not their seq, id or time, which the database sets), seals
-- them and reads them; it never changes or removes one.
GRANT SELECT ON audit_events TO hearth_app;
GRANT INSERT (tenant_id, event, action, outcome, outcome_text, purpose, agent_who,
              agent_client_id, agent_subject, agent_issuer, agent_on_behalf_of, source_ip,
              user_agent, request_id, patients, entities, query, reasons, high_severity)
    ON audit_events TO hearth_app;
GRANT USAGE ON SEQUENCE audit_events_seq TO hearth_app;
REVOKE ALL ON FUNCTION audit_next_seq() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_next_seq() TO hearth_app;
GRANT SELECT, INSERT ON audit_chain TO hearth_app;
GRANT SELECT ON audit_anchors TO hearth_app;
GRANT SELECT, INSERT, UPDATE ON audit_seal_state TO hearth_app;
