-- Per-tenant profile validation on write: off (base R4 structure only), warn (profiles are
-- checked and issues reported, the write succeeds) or enforce (profile errors are 422).
-- `validate_implied` also checks the US Core profile implied by the resource type (and
-- Observation category) when the resource declares none.
ALTER TABLE tenants
    ADD COLUMN validation text NOT NULL DEFAULT 'warn' CHECK (validation IN ('off', 'warn', 'enforce')),
    ADD COLUMN validate_implied boolean NOT NULL DEFAULT false;
