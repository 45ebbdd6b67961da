//! RFC 3161 timestamps: a timestamp authority's signed statement that a signature existed
//! at a time — how Sigstore bundles prove the signing time when the log gives no signed
//! entry timestamp (Rekor v2, or private deployments with a TSA).
//!
//! Checked offline against the trust root's `timestampAuthorities`: the token (bare, or in
//! the `TimeStampResp` Sigstore bundles carry) is a CMS
//! SignedData over a TSTInfo whose message imprint is the hash of the artifact signature;
//! the signer's signed attributes carry the TSTInfo's digest, its signature verifies with
//! a timestamping certificate that chains to a configured TSA valid at `genTime`. Nonces,
//! accuracy and policies are not checked.

use chrono::{DateTime, TimeZone as _, Utc};
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use spki::ObjectIdentifier;
use spki::der::asn1::{GeneralizedTime, OctetString};
use spki::der::{Any, Decode as _, Encode as _};
use x509_cert::Certificate;

use crate::trust_root::TrustRoot;
use crate::x509::{Cert, Hash, SigScheme, verify_chain};

/// Largest token accepted.
pub const MAX_TOKEN_BYTES: usize = 32 * 1024;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const OID_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const OID_ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp token is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("timestamp token is malformed: {0}")]
    Malformed(String),
    #[error("timestamp is for another signature")]
    WrongImprint,
    #[error("timestamp signature does not verify")]
    BadSignature,
    #[error("timestamp authority is not trusted: {0}")]
    Untrusted(String),
}

fn malformed(what: impl std::fmt::Display) -> TimestampError {
    TimestampError::Malformed(what.to_string())
}

fn hash_of(oid: &ObjectIdentifier) -> Option<Hash> {
    match *oid {
        OID_SHA256 => Some(Hash::Sha256),
        OID_SHA384 => Some(Hash::Sha384),
        OID_SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

fn digest(hash: Hash, data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha256 => Sha256::digest(data).to_vec(),
        Hash::Sha384 => Sha384::digest(data).to_vec(),
        Hash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// The signer's scheme from its signature algorithm (and digest algorithm, for the bare
/// key OIDs some TSAs write).
fn signer_scheme(sig_alg: &ObjectIdentifier, digest_alg: Hash) -> Option<SigScheme> {
    Some(match *sig_alg {
        OID_ECDSA_SHA256 => SigScheme::EcdsaDer(Hash::Sha256),
        OID_ECDSA_SHA384 => SigScheme::EcdsaDer(Hash::Sha384),
        OID_ECDSA_SHA512 => SigScheme::EcdsaDer(Hash::Sha512),
        OID_EC_PUBLIC_KEY => SigScheme::EcdsaDer(digest_alg),
        OID_RSA_SHA256 => SigScheme::RsaPkcs1(Hash::Sha256),
        OID_RSA_SHA384 => SigScheme::RsaPkcs1(Hash::Sha384),
        OID_RSA_SHA512 => SigScheme::RsaPkcs1(Hash::Sha512),
        OID_RSA => SigScheme::RsaPkcs1(digest_alg),
        _ => return None,
    })
}

/// The TSTInfo fields used: message imprint (hash algorithm, hash) and genTime.
fn parse_tst_info(der: &[u8]) -> Result<(Hash, Vec<u8>, DateTime<Utc>), TimestampError> {
    let fields = Vec::<Any>::from_der(der).map_err(malformed)?;
    let (Some(imprint), Some(gen_time)) = (fields.get(2), fields.get(4)) else {
        return Err(malformed("TSTInfo is too short"));
    };
    let imprint: Vec<Any> = imprint.decode_as().map_err(malformed)?;
    let (Some(alg), Some(hashed)) = (imprint.first(), imprint.get(1)) else {
        return Err(malformed("messageImprint is too short"));
    };
    let alg: spki::AlgorithmIdentifierOwned = alg.decode_as().map_err(malformed)?;
    let hash = hash_of(&alg.oid).ok_or_else(|| malformed("unsupported imprint hash"))?;
    let hashed: OctetString = hashed.decode_as().map_err(malformed)?;
    let gen_time: GeneralizedTime = gen_time.decode_as().map_err(malformed)?;
    let secs = i64::try_from(gen_time.to_unix_duration().as_secs()).map_err(malformed)?;
    let at = Utc
        .timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| malformed("genTime out of range"))?;
    Ok((hash, hashed.as_bytes().to_vec(), at))
}

/// Verifies an RFC 3161 token (DER) over `signature` against the trust root's timestamp
/// authorities and returns the time it vouches for.
pub(crate) fn verify(
    token: &[u8],
    signature: &[u8],
    root: &TrustRoot,
) -> Result<DateTime<Utc>, TimestampError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TimestampError::TooLarge(token.len()));
    }
    let ci = match ContentInfo::from_der(token) {
        Ok(ci) => ci,
        Err(_) => token_of_response(token)?,
    };
    if ci.content_type != OID_SIGNED_DATA {
        return Err(malformed("not a SignedData"));
    }
    let sd: SignedData = ci.content.decode_as().map_err(malformed)?;
    if sd.encap_content_info.econtent_type != OID_TST_INFO {
        return Err(malformed("content is not a TSTInfo"));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| malformed("no TSTInfo"))?;
    let tst: OctetString = econtent.decode_as().map_err(malformed)?;
    let (imprint_hash, imprint, at) = parse_tst_info(tst.as_bytes())?;
    if digest(imprint_hash, signature) != imprint {
        return Err(TimestampError::WrongImprint);
    }
    let signer = sd
        .signer_infos
        .0
        .iter()
        .next()
        .ok_or_else(|| malformed("no signer"))?;
    let digest_alg =
        hash_of(&signer.digest_alg.oid).ok_or_else(|| malformed("unsupported digest"))?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| malformed("no signed attributes"))?;
    let message_digest = attrs
        .iter()
        .find(|a| a.oid == OID_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| malformed("no messageDigest attribute"))?;
    if message_digest.as_bytes() != digest(digest_alg, tst.as_bytes()).as_slice() {
        return Err(TimestampError::BadSignature);
    }
    let signed = attrs.to_der().map_err(malformed)?;
    let scheme = signer_scheme(&signer.signature_algorithm.oid, digest_alg)
        .ok_or_else(|| malformed("unsupported signature algorithm"))?;
    let sig = signer.signature.as_bytes();

    // The signing certificate: shipped in the token, or the first of a TSA's chain.
    let mut candidates: Vec<Cert> = Vec::new();
    if let Some(set) = &sd.certificates {
        for choice in set.0.iter().take(8) {
            if let cms::cert::CertificateChoices::Certificate(c) = choice
                && let Some(cert) = to_cert(c)
            {
                candidates.push(cert);
            }
        }
    }
    candidates.extend(root.tsas.iter().filter_map(|t| t.chain.first().cloned()));
    let signer_cert = candidates
        .iter()
        .find(|c| c.key().is_ok_and(|k| k.verify(scheme, &signed, sig)))
        .ok_or(TimestampError::BadSignature)?;
    if !signer_cert
        .extended_key_usage()
        .is_some_and(|ekus| ekus.contains(&OID_TIME_STAMPING))
    {
        return Err(TimestampError::Untrusted(
            "signing certificate has no timeStamping usage".into(),
        ));
    }
    let mut last = String::from("no timestamp authority configured");
    for tsa in &root.tsas {
        if !tsa.valid_for.contains(at) {
            continue;
        }
        let Some((tsa_root, rest)) = tsa.chain.split_last() else {
            continue;
        };
        match verify_chain(signer_cert, rest, std::slice::from_ref(tsa_root), at) {
            Ok(_) => return Ok(at),
            Err(e) => last = e.to_string(),
        }
    }
    Err(TimestampError::Untrusted(last))
}

/// The token of a `TimeStampResp` (what Sigstore bundles carry: `SEQUENCE { status
/// PKIStatusInfo, timeStampToken ContentInfo }`), when its status is granted (0 or 1).
fn token_of_response(der: &[u8]) -> Result<ContentInfo, TimestampError> {
    let fields = Vec::<Any>::from_der(der).map_err(malformed)?;
    let (Some(status), Some(token)) = (fields.first(), fields.get(1)) else {
        return Err(malformed("not a TimeStampResp"));
    };
    let status: Vec<Any> = status.decode_as().map_err(malformed)?;
    let granted = status
        .first()
        .and_then(|s| s.decode_as::<u8>().ok())
        .is_some_and(|s| s <= 1);
    if !granted {
        return Err(malformed("timestamp was not granted"));
    }
    token.decode_as().map_err(malformed)
}

fn to_cert(c: &Certificate) -> Option<Cert> {
    Cert::from_der(&c.to_der().ok()?).ok()
}
