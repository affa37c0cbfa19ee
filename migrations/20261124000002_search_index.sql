-- Search index: typed rows written with each current resource version, in the same
-- statement; removed when the resource is updated or deleted. Search never reads JSON.
-- Every table: tenant_id, RLS enabled + forced, the tenant_isolation policy.

CREATE TABLE search_token (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    system         text,
    code           text,
    text_norm      text,
    type_system    text,
    type_code      text
);
CREATE INDEX search_token_value ON search_token (tenant_id, resource_type, param, code, system);
CREATE INDEX search_token_text ON search_token (tenant_id, resource_type, param, text_norm);
CREATE INDEX search_token_owner ON search_token (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_string (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    value_norm     text NOT NULL,
    value_exact    text NOT NULL
);
-- The database collation is C in the dev cluster; text_pattern_ops keeps prefix LIKE
-- indexable under any collation.
CREATE INDEX search_string_prefix ON search_string (tenant_id, resource_type, param, value_norm text_pattern_ops);
CREATE INDEX search_string_contains ON search_string USING gin (value_norm gin_trgm_ops);
CREATE INDEX search_string_owner ON search_string (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_date (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    lo             timestamptz NOT NULL,  -- inclusive; -infinity when open
    hi             timestamptz NOT NULL   -- exclusive; infinity when open
);
CREATE INDEX search_date_lo ON search_date (tenant_id, resource_type, param, lo);
CREATE INDEX search_date_hi ON search_date (tenant_id, resource_type, param, hi);
CREATE INDEX search_date_owner ON search_date (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_reference (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    target_type    text,
    target_id      text,
    url            text
);
CREATE INDEX search_reference_target ON search_reference (tenant_id, target_id, target_type, param, resource_type);
CREATE INDEX search_reference_url ON search_reference (tenant_id, url) WHERE url IS NOT NULL;
CREATE INDEX search_reference_owner ON search_reference (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_quantity (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    value          numeric NOT NULL,
    system         text,
    code           text,
    unit           text
);
CREATE INDEX search_quantity_value ON search_quantity (tenant_id, resource_type, param, value);
CREATE INDEX search_quantity_owner ON search_quantity (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_number (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    value          numeric NOT NULL
);
CREATE INDEX search_number_value ON search_number (tenant_id, resource_type, param, value);
CREATE INDEX search_number_owner ON search_number (tenant_id, resource_type, resource_id, param);

CREATE TABLE search_uri (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    uri            text NOT NULL
);
CREATE INDEX search_uri_value ON search_uri (tenant_id, resource_type, param, uri text_pattern_ops);
CREATE INDEX search_uri_owner ON search_uri (tenant_id, resource_type, resource_id, param);

-- Composite parameters: a token first part and a typed second part from the same element.
CREATE TABLE search_composite (
    tenant_id      text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    text NOT NULL,
    param          text NOT NULL,
    c1_system      text,
    c1_code        text NOT NULL,
    c2_system      text,
    c2_code        text,
    c2_value       numeric,
    c2_lo          timestamptz,
    c2_hi          timestamptz,
    c2_text        text
);
CREATE INDEX search_composite_value ON search_composite (tenant_id, resource_type, param, c1_code, c2_code);
CREATE INDEX search_composite_owner ON search_composite (tenant_id, resource_type, resource_id, param);

-- Keyset paging over the current resources of a type.
CREATE INDEX resources_type_id ON resources (tenant_id, resource_type, id) WHERE NOT deleted;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['search_token', 'search_string', 'search_date', 'search_reference',
                             'search_quantity', 'search_number', 'search_uri', 'search_composite'] LOOP
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
