-- Care relationships for the access decision (ABAC): who treats whom, and where
-- practitioners work and patients are. Derived from Encounter, CareTeam and PractitionerRole
-- (access::relationships::derive) and replaced in the same transaction as the version that
-- states them (store::relationships::replace_relationships), so "may Practitioner X see
-- Patient P now?" is one indexed lookup. Like the search index, these rows are derived data:
-- no foreign key to tenants (written with every version of their source), never updated,
-- only deleted and re-inserted with their source.
-- Same tenancy invariant as every table: tenant_id, RLS enabled and forced, one policy.

-- One row per (practitioner, patient) link a source resource establishes: a participant
-- of an Encounter or a member of a CareTeam. NULL started_at/ended_at: open-ended; ended_at
-- is exclusive (the first instant the link no longer holds).
CREATE TABLE care_relationships (
    tenant_id        text        NOT NULL,
    practitioner_id  text        NOT NULL,
    patient_id       text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('encounter', 'care-team')),
    source_type      text        NOT NULL CHECK (source_type IN ('Encounter', 'CareTeam')),
    source_id        text        NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz
);
-- The decision's lookup.
CREATE INDEX care_relationships_pair
    ON care_relationships (tenant_id, practitioner_id, patient_id);
-- Replacement when the source is written again.
CREATE INDEX care_relationships_source
    ON care_relationships (tenant_id, source_type, source_id);

-- Where a practitioner works (a Location or an Organization) and in which specialties
-- ("system|code"), from PractitionerRole (source_id is its id).
CREATE TABLE practitioner_sites (
    tenant_id        text        NOT NULL,
    practitioner_id  text        NOT NULL,
    site_type        text        NOT NULL CHECK (site_type IN ('Location', 'Organization')),
    site_id          text        NOT NULL,
    specialties      text[]      NOT NULL DEFAULT '{}',
    source_id        text        NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz
);
CREATE INDEX practitioner_sites_practitioner
    ON practitioner_sites (tenant_id, practitioner_id);
CREATE INDEX practitioner_sites_site
    ON practitioner_sites (tenant_id, site_type, site_id);
CREATE INDEX practitioner_sites_source
    ON practitioner_sites (tenant_id, source_id);

-- Where a patient currently is (a Location or the service provider Organization), from
-- Encounters that are planned or under way (source_id is the Encounter's id).
CREATE TABLE patient_sites (
    tenant_id        text        NOT NULL,
    patient_id       text        NOT NULL,
    site_type        text        NOT NULL CHECK (site_type IN ('Location', 'Organization')),
    site_id          text        NOT NULL,
    source_id        text        NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz
);
CREATE INDEX patient_sites_patient
    ON patient_sites (tenant_id, patient_id);
CREATE INDEX patient_sites_site
    ON patient_sites (tenant_id, site_type, site_id);
CREATE INDEX patient_sites_source
    ON patient_sites (tenant_id, source_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['care_relationships', 'practitioner_sites', 'patient_sites'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (tenant_id = current_setting(''hearth.tenant'', true))
                 WITH CHECK (tenant_id = current_setting(''hearth.tenant'', true))', t);
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I TO hearth_app', t);
    END LOOP;
END
$$;
