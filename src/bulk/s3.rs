//! Export files in S3: a finished part is uploaded (SSE-KMS, the configured key) to
//! `{prefix}{tenant}/{job}/{file}` and its local copy removed; downloads stream from S3.
//! Requests are signed with AWS's SigV4 crate; the body is streamed (`UNSIGNED-PAYLOAD`,
//! which S3 accepts over TLS), so a part is never held in memory. Credentials come from
//! the `AWS_*` environment variables.

use std::path::Path;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

use super::output::OutputError;
use crate::config::BulkConfig;

/// Where and how export files go to S3.
#[derive(Clone)]
pub struct S3Target {
    http: reqwest::Client,
    /// Path-style base: `{endpoint}/{bucket}`.
    base: String,
    region: String,
    kms_key_id: Option<String>,
    prefix: String,
    credentials: Credentials,
}

impl S3Target {
    /// The configured target (`bulk.s3_bucket`), if any.
    pub fn from_config(config: &BulkConfig) -> Result<Option<S3Target>, OutputError> {
        let Some(bucket) = config.s3_bucket.as_deref().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let region = config.s3_region.clone().ok_or(OutputError::S3(
            "bulk.s3_region is required with bulk.s3_bucket",
        ))?;
        let endpoint = config
            .s3_endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (key, secret) = match &config.s3_stand_in_credentials {
            Some((k, s)) => (k.clone(), s.clone()),
            None => match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => (k, s),
                _ => {
                    return Err(OutputError::S3(
                        "AWS credentials are not in the environment",
                    ));
                }
            },
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| OutputError::S3("cannot build the HTTP client"))?;
        Ok(Some(S3Target {
            http,
            base: format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            region,
            kms_key_id: config.s3_kms_key_id.clone(),
            prefix: config.s3_prefix.clone(),
            credentials: Credentials::new(
                key,
                secret,
                var("AWS_SESSION_TOKEN"),
                None,
                "environment",
            ),
        }))
    }

    pub fn key(&self, tenant: &str, job: uuid::Uuid, location: &str) -> String {
        format!("{}{tenant}/{job}/{location}", self.prefix)
    }

    /// The signed headers of a request (the body is not signed: `UNSIGNED-PAYLOAD`).
    fn signed_headers(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<Vec<(String, String)>, OutputError> {
        let identity = self.credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|_| OutputError::S3("signing parameters"))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::UnsignedPayload,
        )
        .map_err(|_| OutputError::S3("request not signable"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|_| OutputError::S3("signing failed"))?
            .into_parts();
        let mut out = headers.to_vec();
        for (name, value) in instructions.headers() {
            out.push((name.to_owned(), value.to_owned()));
        }
        Ok(out)
    }

    fn url(&self, key: &str) -> String {
        let encoded: Vec<String> = key.split('/').map(percent_encode).collect();
        format!("{}/{}", self.base, encoded.join("/"))
    }

    /// Upload a finished part, encrypted with the KMS key.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<(), OutputError> {
        let file = tokio::fs::File::open(path).await?;
        let length = file.metadata().await?.len();
        let url = self.url(key);
        let mut headers = vec![
            ("content-length".to_owned(), length.to_string()),
            (
                "content-type".to_owned(),
                "application/fhir+ndjson".to_owned(),
            ),
            (
                "x-amz-server-side-encryption".to_owned(),
                "aws:kms".to_owned(),
            ),
        ];
        if let Some(kms) = &self.kms_key_id {
            headers.push((
                "x-amz-server-side-encryption-aws-kms-key-id".to_owned(),
                kms.clone(),
            ));
        }
        let signed = self.signed_headers("PUT", &url, &headers)?;
        let mut request = self.http.put(&url).body(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ));
        for (k, v) in &signed {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|_| OutputError::S3("S3 is not reachable"))?;
        if !response.status().is_success() {
            tracing::warn!(
                status = response.status().as_u16(),
                "export upload refused by S3"
            );
            return Err(OutputError::S3("S3 refused the upload"));
        }
        Ok(())
    }

    /// A stored part's bytes, streamed.
    pub async fn get(&self, key: &str) -> Result<reqwest::Response, OutputError> {
        let url = self.url(key);
        let signed = self.signed_headers("GET", &url, &[])?;
        let mut request = self.http.get(&url);
        for (k, v) in &signed {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|_| OutputError::S3("S3 is not reachable"))?;
        if !response.status().is_success() {
            tracing::warn!(
                status = response.status().as_u16(),
                "export download refused by S3"
            );
            return Err(OutputError::S3("S3 refused the download"));
        }
        Ok(response)
    }

    pub async fn delete(&self, key: &str) -> Result<(), OutputError> {
        let url = self.url(key);
        let signed = self.signed_headers("DELETE", &url, &[])?;
        let mut request = self.http.delete(&url);
        for (k, v) in &signed {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|_| OutputError::S3("S3 is not reachable"))?;
        if !response.status().is_success() {
            return Err(OutputError::S3("S3 refused the delete"));
        }
        Ok(())
    }
}

/// RFC 3986 unreserved characters stay; everything else is %-encoded (S3 keys).
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
