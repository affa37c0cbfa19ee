//! Feeds: which sender a message comes from, its tenant, and its site conventions.

use std::collections::BTreeMap;

use chrono_tz::Tz;

use super::charset::Charset;
use crate::config::{FeedConfig, MllpListenerConfig};
use crate::tenant::{InvalidTenantId, TenantId};

/// A feed's conventions, checked at start-up.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    pub name: String,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub client_identity: Option<String>,
    pub time_zone: Option<Tz>,
    pub charset: Option<Charset>,
    pub default_identifier_system: Option<String>,
    pub assigning_authorities: BTreeMap<String, String>,
    pub reject_z_segments: bool,
}

/// A listener's tenant and feeds.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: String,
    pub tenant: TenantId,
    pub feeds: Vec<FeedSettings>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedConfigError {
    #[error("listener {listener}: {source}")]
    Tenant {
        listener: String,
        source: InvalidTenantId,
    },
    #[error("listener {listener}, feed {feed}: unknown time zone '{zone}'")]
    TimeZone {
        listener: String,
        feed: String,
        zone: String,
    },
    #[error("listener {listener}, feed {feed}: unknown charset '{charset}' (ASCII, 8859/1, UTF-8)")]
    Charset {
        listener: String,
        feed: String,
        charset: String,
    },
}

impl ListenerSettings {
    pub fn from_config(c: &MllpListenerConfig) -> Result<Self, FeedConfigError> {
        let tenant = TenantId::parse(&c.tenant).map_err(|source| FeedConfigError::Tenant {
            listener: c.name.clone(),
            source,
        })?;
        let feeds = c
            .feeds
            .iter()
            .map(|f| feed(&c.name, f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListenerSettings {
            name: c.name.clone(),
            tenant,
            feeds,
        })
    }

    /// The feed a message belongs to: MSH-3/MSH-4 must match where the feed names them, and
    /// the TLS identity where it requires one (`peer_identities` is `None` for a replay of a
    /// stored message, whose identity was checked when it arrived). `None`: an unknown
    /// sender (AR).
    pub fn feed_for(
        &self,
        sending_application: Option<&str>,
        sending_facility: Option<&str>,
        peer_identities: Option<&[String]>,
    ) -> Option<&FeedSettings> {
        self.feeds.iter().find(|f| {
            let matches = |want: &Option<String>, got: Option<&str>| {
                want.as_deref().is_none_or(|w| Some(w) == got)
            };
            matches(&f.sending_application, sending_application)
                && matches(&f.sending_facility, sending_facility)
                && f.client_identity
                    .as_ref()
                    .is_none_or(|id| peer_identities.is_none_or(|ids| ids.iter().any(|p| p == id)))
        })
    }
}

fn feed(listener: &str, f: &FeedConfig) -> Result<FeedSettings, FeedConfigError> {
    let time_zone = f
        .time_zone
        .as_deref()
        .map(|z| {
            z.parse::<Tz>().map_err(|_| FeedConfigError::TimeZone {
                listener: listener.into(),
                feed: f.name.clone(),
                zone: z.into(),
            })
        })
        .transpose()?;
    let charset = f
        .charset
        .as_deref()
        .map(|c| {
            Charset::from_hl7_name(c).ok_or_else(|| FeedConfigError::Charset {
                listener: listener.into(),
                feed: f.name.clone(),
                charset: c.into(),
            })
        })
        .transpose()?;
    Ok(FeedSettings {
        name: f.name.clone(),
        sending_application: f.sending_application.clone(),
        sending_facility: f.sending_facility.clone(),
        client_identity: f.client_identity.clone(),
        time_zone,
        charset,
        default_identifier_system: f.default_identifier_system.clone(),
        assigning_authorities: f.assigning_authorities.clone(),
        reject_z_segments: f.reject_z_segments,
    })
}
