//! The tenant: one customer health system. Every row, request and token belongs to one.

use std::fmt;

/// A validated tenant id: 1-63 characters of `[a-z0-9-]`, starting with a letter or digit.
///
/// The same rule is a CHECK constraint on `tenants.id`, so a `TenantId` can be embedded in a
/// URL or a log line as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant id is 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct InvalidTenantId;

impl TenantId {
    pub fn parse(raw: &str) -> Result<Self, InvalidTenantId> {
        let bytes = raw.as_bytes();
        let valid_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        match bytes.first() {
            Some(first) if bytes.len() <= 63 && *first != b'-' && bytes.iter().all(valid_char) => {
                Ok(TenantId(raw.to_owned()))
            }
            _ => Err(InvalidTenantId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs_and_rejects_everything_else() {
        assert!(TenantId::parse("demo").is_ok());
        assert!(TenantId::parse("st-mary-2").is_ok());
        for bad in ["", "-x", "Demo", "a b", "a/b", "a'b", &"x".repeat(64)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
