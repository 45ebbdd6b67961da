//! The kubernetes target: server-side apply (`PATCH` with
//! `Content-Type: application/apply-patch+yaml`, field manager `imagelib`, `force=true`)
//! of each manifest through the API server, and `DELETE` on removal.

use std::time::Duration;

use super::{Applied, Change, TargetError, plural};
use crate::render::Manifest;

#[derive(Debug, Clone)]
pub struct Kubernetes {
    http: reqwest::Client,
    api: String,
    token: Option<String>,
}

pub const FIELD_MANAGER: &str = "imagelib";

impl Kubernetes {
    pub fn new(
        api: &str,
        token: Option<String>,
        ca_pem: Option<&str>,
    ) -> Result<Self, TargetError> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        if let Some(ca) = ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca.as_bytes())
                .map_err(|e| TargetError::Kubernetes(format!("bad CA: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        Ok(Kubernetes {
            http: b
                .build()
                .map_err(|e| TargetError::Kubernetes(e.to_string()))?,
            api: api.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn url(&self, m: &Manifest) -> Result<String, TargetError> {
        let plural = plural(m.kind())
            .ok_or_else(|| TargetError::Kubernetes(format!("unknown kind {}", m.kind())))?;
        let path = match m.namespace() {
            Some(ns) => format!(
                "/apis/{}/namespaces/{ns}/{plural}/{}",
                m.api_version(),
                m.name()
            ),
            None => format!("/apis/{}/{plural}/{}", m.api_version(), m.name()),
        };
        Ok(format!("{}{path}", self.api))
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn apply(
        &self,
        _change: &Change<'_>,
        manifests: &[Manifest],
    ) -> Result<Applied, TargetError> {
        let mut revision = String::new();
        for m in manifests {
            let url = format!("{}?fieldManager={FIELD_MANAGER}&force=true", self.url(m)?);
            let res = self
                .auth(self.http.patch(&url))
                .header("Content-Type", "application/apply-patch+yaml")
                .header("Accept", "application/json")
                .body(m.yaml())
                .send()
                .await
                .map_err(|e| TargetError::Kubernetes(format!("{}: {e}", m.name())))?;
            let status = res.status();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            if !status.is_success() {
                return Err(TargetError::Kubernetes(format!(
                    "apply of {} {} answered {status}: {}",
                    m.kind(),
                    m.name(),
                    body["message"].as_str().unwrap_or("no message")
                )));
            }
            revision = body["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        Ok(Applied {
            revision,
            changed: true,
        })
    }

    pub async fn delete(
        &self,
        _change: &Change<'_>,
        manifests: &[Manifest],
    ) -> Result<Applied, TargetError> {
        for m in manifests {
            let res = self
                .auth(self.http.delete(self.url(m)?))
                .send()
                .await
                .map_err(|e| TargetError::Kubernetes(format!("{}: {e}", m.name())))?;
            if !res.status().is_success() && res.status().as_u16() != 404 {
                return Err(TargetError::Kubernetes(format!(
                    "delete of {} {} answered {}",
                    m.kind(),
                    m.name(),
                    res.status()
                )));
            }
        }
        Ok(Applied {
            revision: String::new(),
            changed: true,
        })
    }
}
