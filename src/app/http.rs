//! What every app response carries: the Content-Security-Policy (a per-response nonce
//! for the one inline style, `frame-ancestors` from the EHR registration), no caching
//! (pages show PHI), no referrer (callback URLs carry codes), and the app's cookies.

use actix_web::http::header::HeaderValue;
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};

use crate::tenant::TenantId;

/// The session cookie: `{tenant}.{random token}`.
pub const SESSION_COOKIE: &str = "hearth_session";
/// Binds a launch's `state` to the browser that started it.
pub const LAUNCH_COOKIE: &str = "hearth_launch";
/// Both cookies are sent to the app's paths only.
const COOKIE_PATH: &str = "/app";

/// Where a page may be framed and where its forms may go.
#[derive(Debug, Clone, Default)]
pub struct PagePolicy {
    pub nonce: String,
    /// Origins allowed to frame the page; empty = nobody.
    pub frame_ancestors: Vec<String>,
    /// An extra `form-action` target (the EHR's authorize endpoint, for the POST form).
    pub form_target: Option<String>,
}

impl PagePolicy {
    pub fn new(frame_ancestors: &[String]) -> Self {
        PagePolicy {
            nonce: crate::auth::seal::random_token(),
            frame_ancestors: frame_ancestors.to_vec(),
            form_target: None,
        }
    }

    fn csp(&self) -> String {
        let ancestors = if self.frame_ancestors.is_empty() {
            "'none'".to_owned()
        } else {
            self.frame_ancestors.join(" ")
        };
        let form = match &self.form_target {
            Some(target) => format!("'self' {}", origin_of(target).unwrap_or_default()),
            None => "'self'".to_owned(),
        };
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self' 'nonce-{}'; img-src 'self' data:; \
             connect-src 'self'; form-action {form}; frame-ancestors {ancestors}; base-uri 'none'",
            self.nonce
        )
    }

    /// An HTML page with the security headers.
    pub fn page(&self, status: StatusCode, html: String) -> HttpResponse {
        let mut builder = HttpResponse::build(status);
        self.headers(&mut builder);
        builder
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(html)
    }

    pub fn headers(&self, builder: &mut HttpResponseBuilder) {
        builder
            .insert_header((header::CONTENT_SECURITY_POLICY, self.csp()))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::REFERRER_POLICY, "no-referrer"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    }
}

/// `scheme://host[:port]` of an absolute URL.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let origin = parsed.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// A cookie for the embedded browser: HttpOnly, Secure, SameSite=None (the app runs in the
/// EHR's iframe, a third-party context), Partitioned (CHIPS: browsers that block
/// third-party cookies still keep it, in the EHR page's partition), path /app. Written by
/// hand: actix-web's cookie type has no `Partitioned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCookie(String);

impl AppCookie {
    pub fn new(name: &'static str, value: &str, max_age_secs: i64) -> AppCookie {
        // Values are base64url tokens and tenant ids: nothing to quote or escape.
        AppCookie(format!(
            "{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=None; Partitioned"
        ))
    }

    /// The cookie that deletes `name` (same path and partition).
    pub fn removal(name: &'static str) -> AppCookie {
        AppCookie::new(name, "", 0)
    }

    /// Add it to a response.
    pub fn set_on(&self, response: &mut HttpResponse) {
        if let Ok(value) = HeaderValue::from_str(&self.0) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A cookie value `{tenant}.{token}` split, the tenant checked.
pub fn tenant_token(value: &str) -> Option<(TenantId, &str)> {
    let (tenant, token) = value.split_once('.')?;
    let tenant = TenantId::parse(tenant).ok()?;
    (!token.is_empty()).then_some((tenant, token))
}

pub fn cookie_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.cookie(name)
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// 303 See Other to a path of the app.
pub fn see_other(location: &str) -> HttpResponseBuilder {
    let mut builder = HttpResponse::SeeOther();
    builder
        .insert_header((header::LOCATION, location.to_owned()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_ancestors_and_the_nonce() {
        let mut policy = PagePolicy::new(&["https://ehr.example.org".to_owned()]);
        policy.form_target = Some("https://auth.example.org/oauth2/authorize?x=1".into());
        let csp = policy.csp();
        assert!(csp.contains("frame-ancestors https://ehr.example.org;"));
        assert!(csp.contains(&format!("'nonce-{}'", policy.nonce)));
        assert!(csp.contains("form-action 'self' https://auth.example.org;"));
        assert!(csp.contains("script-src 'self';"));
        assert!(
            PagePolicy::new(&[])
                .csp()
                .contains("frame-ancestors 'none'")
        );
    }

    #[test]
    fn cookie_values_carry_a_valid_tenant() {
        assert!(tenant_token("acme.abc").is_some());
        assert!(tenant_token("ACME.abc").is_none());
        assert!(tenant_token("acme.").is_none());
        assert!(tenant_token("nodot").is_none());
        let cookie = AppCookie::new(SESSION_COOKIE, "acme.x", 60);
        let cookie = cookie.as_str();
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=None",
            "Partitioned",
            "Path=/app",
            "Max-Age=60",
        ] {
            assert!(cookie.contains(part), "{cookie}");
        }
    }
}
