-- A Backend Services client may be limited to the patients of one Group (its members):
-- a partner that serves a panel, a payer for its members. NULL: the whole tenant.
ALTER TABLE oauth_clients ADD COLUMN patient_group text;
