//! The keyless trust root: which Fulcio CAs may issue signing certificates and which Rekor
//! keys may vouch for a signature's time, read from a file — no TUF, no network.
//!
//! The file is Sigstore's own `trusted_root.json`
//! (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`, what `cosign trusted-root
//! create` writes and the public-good TUF repository serves), so an air-gapped team copies
//! one file. `certificateAuthorities`, `tlogs` and `timestampAuthorities` are used; CT logs
//! are ignored (SCTs are not verified).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::x509::{self, Cert, CertError, VerifyKey};

/// The trusted-root media types accepted.
pub const MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.trustedroot";
/// Largest trusted_root.json accepted (the public-good one is ~7 KiB).
pub const MAX_TRUST_ROOT_BYTES: usize = 1024 * 1024;
/// Most CAs or logs read from one trust root.
pub const MAX_ENTRIES: usize = 64;
/// Most certificates shipped with a signature that path building looks at.
pub const MAX_SHIPPED_CERTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustRootError {
    #[error("trust root is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("trust root is not valid JSON: {0}")]
    Json(String),
    #[error("trust root media type `{0}` is not {MEDIA_TYPE_PREFIX}+json")]
    MediaType(String),
    #[error("trust root has more than {MAX_ENTRIES} {0}")]
    TooMany(&'static str),
    #[error("trust root has no certificate authority")]
    NoAuthority,
    #[error("{what}: invalid base64")]
    Base64 { what: &'static str },
    #[error("{what}: {source}")]
    Cert {
        what: &'static str,
        source: CertError,
    },
    #[error("invalid validFor time `{0}`")]
    Time(String),
}

/// A time window; open ends are unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValidFor {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

impl ValidFor {
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= at) && self.end.is_none_or(|e| at <= e)
    }
}

/// A Fulcio CA: its chain (intermediates first, root last) and when it issued.
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    pub uri: String,
    pub(crate) chain: Vec<Cert>,
    pub valid_for: ValidFor,
}

/// A Rekor log's key.
#[derive(Debug, Clone)]
pub struct TransparencyLog {
    pub base_url: String,
    /// The log id: SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub log_id: Vec<u8>,
    pub(crate) key: VerifyKey,
    pub valid_for: ValidFor,
}

/// Parsed `trusted_root.json` (or PEM files).
#[derive(Debug, Clone, Default)]
pub struct TrustRoot {
    pub(crate) authorities: Vec<CertificateAuthority>,
    pub(crate) tlogs: Vec<TransparencyLog>,
    /// RFC 3161 timestamp authorities: chain from the signing certificate to the root.
    pub(crate) tsas: Vec<CertificateAuthority>,
    /// Logs of the file left out because their key type is not supported.
    pub skipped_tlogs: usize,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawCa>,
    #[serde(default)]
    timestamp_authorities: Vec<RawCa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    #[serde(default)]
    base_url: String,
    public_key: RawPublicKey,
    log_id: Option<RawLogId>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPublicKey {
    raw_bytes: String,
    #[serde(default)]
    valid_for: Option<RawValidFor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCa {
    #[serde(default)]
    uri: String,
    cert_chain: RawChain,
    #[serde(default)]
    valid_for: Option<RawValidFor>,
}

#[derive(Deserialize)]
struct RawChain {
    #[serde(default)]
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawValidFor {
    start: Option<String>,
    end: Option<String>,
}

fn parse_time(s: Option<&str>) -> Result<Option<DateTime<Utc>>, TrustRootError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| TrustRootError::Time(s.chars().take(64).collect()))
    })
    .transpose()
}

fn valid_for(raw: Option<&RawValidFor>) -> Result<ValidFor, TrustRootError> {
    let Some(raw) = raw else {
        return Ok(ValidFor::default());
    };
    Ok(ValidFor {
        start: parse_time(raw.start.as_deref())?,
        end: parse_time(raw.end.as_deref())?,
    })
}

fn b64(s: &str, what: &'static str) -> Result<Vec<u8>, TrustRootError> {
    STANDARD
        .decode(s.trim())
        .map_err(|_| TrustRootError::Base64 { what })
}

impl TrustRoot {
    /// Parses Sigstore's `trusted_root.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TrustRootError> {
        if bytes.len() > MAX_TRUST_ROOT_BYTES {
            return Err(TrustRootError::TooLarge {
                len: bytes.len(),
                max: MAX_TRUST_ROOT_BYTES,
            });
        }
        let raw: RawRoot =
            serde_json::from_slice(bytes).map_err(|e| TrustRootError::Json(e.to_string()))?;
        if !raw.media_type.starts_with(MEDIA_TYPE_PREFIX) {
            return Err(TrustRootError::MediaType(
                raw.media_type.chars().take(128).collect(),
            ));
        }
        if raw.certificate_authorities.len() > MAX_ENTRIES {
            return Err(TrustRootError::TooMany("certificate authorities"));
        }
        if raw.tlogs.len() > MAX_ENTRIES {
            return Err(TrustRootError::TooMany("transparency logs"));
        }
        let mut authorities = Vec::new();
        for ca in &raw.certificate_authorities {
            if ca.cert_chain.certificates.len() > x509::MAX_CERTS {
                return Err(TrustRootError::TooMany("certificates in a chain"));
            }
            let chain = ca
                .cert_chain
                .certificates
                .iter()
                .map(|c| {
                    Cert::from_der(&b64(&c.raw_bytes, "CA certificate")?).map_err(|source| {
                        TrustRootError::Cert {
                            what: "CA certificate",
                            source,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if chain.is_empty() {
                continue;
            }
            authorities.push(CertificateAuthority {
                uri: ca.uri.clone(),
                chain,
                valid_for: valid_for(ca.valid_for.as_ref())?,
            });
        }
        if authorities.is_empty() {
            return Err(TrustRootError::NoAuthority);
        }
        let mut tlogs = Vec::new();
        let mut skipped_tlogs = 0;
        for log in &raw.tlogs {
            let der = b64(&log.public_key.raw_bytes, "log public key")?;
            // A log whose key this verifier can't use (a new algorithm, or none) is left
            // out, as Sigstore's clients do: its entries then fail as from an unknown log.
            let Ok(key) = VerifyKey::from_spki_der(&der) else {
                skipped_tlogs += 1;
                continue;
            };
            let log_id = match &log.log_id {
                Some(id) => b64(&id.key_id, "log id")?,
                None => Sha256::digest(&der).to_vec(),
            };
            tlogs.push(TransparencyLog {
                base_url: log.base_url.clone(),
                log_id,
                key,
                valid_for: valid_for(log.public_key.valid_for.as_ref())?,
            });
        }
        if raw.timestamp_authorities.len() > MAX_ENTRIES {
            return Err(TrustRootError::TooMany("timestamp authorities"));
        }
        // Like logs, a TSA this verifier can't read is left out rather than refusing the
        // whole file: it only matters to signatures timestamped by it.
        let tsas = raw
            .timestamp_authorities
            .iter()
            .filter_map(|tsa| {
                let chain = tsa
                    .cert_chain
                    .certificates
                    .iter()
                    .take(x509::MAX_CERTS)
                    .map(|c| Cert::from_der(&b64(&c.raw_bytes, "TSA certificate").ok()?).ok())
                    .collect::<Option<Vec<_>>>()?;
                (!chain.is_empty()).then(|| {
                    Ok(CertificateAuthority {
                        uri: tsa.uri.clone(),
                        chain,
                        valid_for: valid_for(tsa.valid_for.as_ref())?,
                    })
                })
            })
            .collect::<Result<Vec<_>, TrustRootError>>()?;
        Ok(Self {
            authorities,
            tlogs,
            tsas,
            skipped_tlogs,
        })
    }

    /// A trust root from PEM files: the Fulcio chain (intermediates then root, as
    /// `cosign verify --certificate-chain` takes it) and the Rekor public key, if any.
    pub fn from_pem(
        fulcio_chain_pem: &str,
        rekor_key_pem: Option<&str>,
    ) -> Result<Self, TrustRootError> {
        let chain =
            x509::certs_from_pem(fulcio_chain_pem).map_err(|source| TrustRootError::Cert {
                what: "Fulcio chain",
                source,
            })?;
        let mut tlogs = Vec::new();
        if let Some(pem) = rekor_key_pem {
            let key = VerifyKey::from_pem(pem).map_err(|source| TrustRootError::Cert {
                what: "Rekor key",
                source,
            })?;
            let (_, der) = spki::der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| {
                TrustRootError::Cert {
                    what: "Rekor key",
                    source: CertError::Pem(e.to_string()),
                }
            })?;
            tlogs.push(TransparencyLog {
                base_url: String::new(),
                log_id: Sha256::digest(&der).to_vec(),
                key,
                valid_for: ValidFor::default(),
            });
        }
        Ok(Self {
            authorities: vec![CertificateAuthority {
                uri: String::new(),
                chain,
                valid_for: ValidFor::default(),
            }],
            tlogs,
            tsas: Vec::new(),
            skipped_tlogs: 0,
        })
    }

    pub fn authorities(&self) -> &[CertificateAuthority] {
        &self.authorities
    }

    pub fn tlogs(&self) -> &[TransparencyLog] {
        &self.tlogs
    }

    pub fn timestamp_authorities(&self) -> &[CertificateAuthority] {
        &self.tsas
    }

    pub(crate) fn tlog(&self, log_id: &[u8]) -> Option<&TransparencyLog> {
        self.tlogs.iter().find(|l| l.log_id == log_id)
    }

    /// Verifies that `leaf` chains (through `extra`, the certificates shipped with the
    /// signature) to a CA of this root that was issuing at `at`, every certificate valid
    /// at `at`.
    pub(crate) fn verify_leaf(
        &self,
        leaf: &Cert,
        extra: &[Cert],
        at: DateTime<Utc>,
    ) -> Result<(), x509::ChainError> {
        let mut last = None;
        for ca in &self.authorities {
            if !ca.valid_for.contains(at) {
                continue;
            }
            let Some((root, intermediates)) = ca.chain.split_last() else {
                continue;
            };
            let mut pool: Vec<Cert> = intermediates.to_vec();
            // A real chain has one or two intermediates; more only costs verifications.
            pool.extend(extra.iter().take(MAX_SHIPPED_CERTS).cloned());
            match x509::verify_chain(leaf, &pool, std::slice::from_ref(root), at) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| x509::ChainError::Unchained(leaf.subject())))
    }
}
