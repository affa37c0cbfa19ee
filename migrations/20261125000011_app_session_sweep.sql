-- Sessions nobody came back to still end on time: the background sweeper of `hearth
-- serve` asks which tenants have open sessions past their idle timeout or lifetime. It
-- runs as the app role, which sees one tenant at a time, so this runs as the owner,
-- visits each tenant under RLS by setting hearth.tenant in turn, and returns ids only.
CREATE FUNCTION app_tenants_with_stale_sessions() RETURNS SETOF text
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
            SELECT 1 FROM app_sessions s
             WHERE s.tenant_id = t AND s.ended_at IS NULL
               AND (s.expires_at <= now()
                    OR s.last_seen_at + make_interval(secs => s.idle_timeout_secs) <= now())) THEN
            RETURN NEXT t;
        END IF;
    END LOOP;
    PERFORM set_config('hearth.tenant', coalesce(saved, ''), true);
END
$$;
REVOKE ALL ON FUNCTION app_tenants_with_stale_sessions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app_tenants_with_stale_sessions() TO hearth_app;
