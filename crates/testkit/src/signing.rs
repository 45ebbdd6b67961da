//! Signing material made in Rust for tests: cosign key-based signatures, DSSE envelopes,
//! a Fulcio-like CA, a Rekor-like log key, Sigstore bundles and Notation JWS envelopes.
//!
//! The formats are the ones cosign and Notation write, so the verifier in `imagelib-trust`
//! is tested against what a registry really holds — without a network or the real tools.
//! Test-only code: it panics on its own bugs (never on registry data, which it doesn't read).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use rand_core::OsRng;
use sha2::{Digest as _, Sha256};

/// An ECDSA P-256 signing key, like `cosign generate-key-pair` makes.
#[derive(Clone)]
pub struct TestKey {
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey").finish_non_exhaustive()
    }
}

impl TestKey {
    pub fn generate() -> Self {
        Self {
            key: p256::ecdsa::SigningKey::random(&mut OsRng),
        }
    }

    /// The PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign.pub` holds it.
    pub fn public_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("P-256 public key encodes")
    }

    /// The SubjectPublicKeyInfo DER.
    pub fn public_der(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_public_key_der()
            .expect("P-256 public key encodes")
            .into_vec()
    }

    /// `sha256:` + hex of the SubjectPublicKeyInfo DER: the key id imagelib reports.
    pub fn key_id(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.public_der())))
    }

    /// ECDSA-SHA256 signature over `msg`, ASN.1 DER, base64 — cosign's
    /// `dev.cosignproject.cosign/signature` annotation value.
    pub fn sign(&self, msg: &[u8]) -> String {
        STANDARD.encode(self.sign_der(msg))
    }

    /// ECDSA-SHA256 signature over `msg`, ASN.1 DER bytes.
    pub fn sign_der(&self, msg: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.key.sign(msg);
        sig.to_der().as_bytes().to_vec()
    }

    pub fn signing_key(&self) -> &p256::ecdsa::SigningKey {
        &self.key
    }
}

/// The simple-signing payload exactly as `cosign sign` writes it (Go's `json.Marshal` of
/// `payload.SimpleContainerImage` with no annotations: keys in struct order, `optional`
/// null, no trailing newline).
pub fn cosign_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"cosign container image signature"}},"optional":null}}"#,
        json_str(docker_reference),
        json_str(digest)
    )
    .into_bytes()
}

/// DSSE pre-authentication encoding: `DSSEv1 <len> <type> <len> <body>`.
pub fn dsse_pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope signed by `key`, as cosign attaches attestations
/// (`{"payloadType","payload","signatures":[{"keyid","sig"}]}`).
pub fn dsse_envelope(payload_type: &str, payload: &[u8], key: &TestKey) -> Vec<u8> {
    let sig = key.sign(&dsse_pae(payload_type, payload));
    serde_json::json!({
        "payloadType": payload_type,
        "payload": STANDARD.encode(payload),
        "signatures": [{"keyid": "", "sig": sig}],
    })
    .to_string()
    .into_bytes()
}

/// A subject alternative name of a Fulcio-like leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    Email(String),
    Uri(String),
    /// Fulcio's otherName username SAN (`1.3.6.1.4.1.57264.1.7`, UTF8String).
    Username(String),
}

impl San {
    pub fn value(&self) -> &str {
        match self {
            San::Email(s) | San::Uri(s) | San::Username(s) => s,
        }
    }
}

/// A Fulcio-like CA: a P-384 root and intermediate, issuing short-lived P-256 leaves with
/// the codeSigning EKU, a SAN and the OIDC issuer extensions Fulcio writes.
pub struct TestFulcio {
    root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    intermediate: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for TestFulcio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestFulcio").finish_non_exhaustive()
    }
}

/// A leaf certificate and its key.
#[derive(Debug, Clone)]
pub struct TestLeaf {
    /// The leaf certificate (PEM), `dev.sigstore.cosign/certificate`.
    pub cert_pem: String,
    /// Intermediate then root (PEM), `dev.sigstore.cosign/chain`.
    pub chain_pem: String,
    pub key: TestKey,
}

impl TestLeaf {
    pub fn cert_der(&self) -> Vec<u8> {
        pem_to_der(&self.cert_pem)
    }
}

fn ca_params(cn: &str, not_before: time::OffsetDateTime, years: i64) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "imagelib-test");
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p.not_before = not_before;
    p.not_after = not_before + time::Duration::days(365 * years);
    p.serial_number = Some(rcgen::SerialNumber::from(rand_u64()));
    p
}

fn rand_u64() -> u64 {
    use rand_core::RngCore as _;
    OsRng.next_u64() >> 1
}

fn to_offset(t: chrono::DateTime<chrono::Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp()).expect("time in range")
}

/// A P-256 rcgen key pair and the same key as a [`TestKey`].
fn p256_pair() -> (rcgen::KeyPair, TestKey) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
    let sk = <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(
        &kp.serialize_der(),
    )
    .expect("P-256 PKCS#8");
    (kp, TestKey { key: sk })
}

impl TestFulcio {
    /// Root and intermediate valid from a year ago for ten years.
    pub fn new() -> Self {
        Self::with_name("imagelib test fulcio")
    }

    /// A CA whose names differ from another test CA's.
    pub fn with_name(name: &str) -> Self {
        let start = time::OffsetDateTime::now_utc() - time::Duration::days(365);
        let root_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen");
        let root = rcgen::CertifiedIssuer::self_signed(
            ca_params(&format!("{name} root"), start, 10),
            root_key,
        )
        .expect("root cert");
        let int_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("keygen");
        let intermediate = rcgen::CertifiedIssuer::signed_by(
            ca_params(&format!("{name} intermediate"), start, 10),
            int_key,
            &root,
        )
        .expect("intermediate cert");
        Self { root, intermediate }
    }

    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    pub fn intermediate_pem(&self) -> String {
        self.intermediate.pem()
    }

    pub fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    /// Intermediate then root, PEM.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.intermediate_pem(), self.root_pem())
    }

    /// A leaf for `san` naming OIDC `issuer` (extensions 1.3.6.1.4.1.57264.1.8 as a DER
    /// UTF8String and legacy .1.1 as raw bytes), valid from `not_before` to `not_after`.
    pub fn issue(
        &self,
        san: San,
        issuer: &str,
        not_before: chrono::DateTime<chrono::Utc>,
        not_after: chrono::DateTime<chrono::Utc>,
    ) -> TestLeaf {
        let (kp, key) = p256_pair();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = vec![match &san {
            San::Email(e) => rcgen::SanType::Rfc822Name(e.clone().try_into().expect("IA5 email")),
            San::Uri(u) => rcgen::SanType::URI(u.clone().try_into().expect("IA5 URI")),
            San::Username(u) => rcgen::SanType::OtherName((
                vec![1, 3, 6, 1, 4, 1, 57264, 1, 7],
                rcgen::OtherNameValue::Utf8String(u.clone()),
            )),
        }];
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::CodeSigning];
        p.not_before = to_offset(not_before);
        p.not_after = to_offset(not_after);
        p.serial_number = Some(rcgen::SerialNumber::from(rand_u64()));
        p.use_authority_key_identifier_extension = true;
        p.custom_extensions = vec![
            rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 1],
                issuer.as_bytes().to_vec(),
            ),
            rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 57264, 1, 8],
                der_utf8(issuer),
            ),
        ];
        let cert = p.signed_by(&kp, &self.intermediate).expect("leaf cert");
        TestLeaf {
            cert_pem: cert.pem(),
            chain_pem: self.chain_pem(),
            key,
        }
    }
}

impl Default for TestFulcio {
    fn default() -> Self {
        Self::new()
    }
}

fn der_utf8(s: &str) -> Vec<u8> {
    let len = s.len();
    let mut out = vec![0x0c];
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

/// Decodes the first PEM block's base64 body.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).expect("PEM base64")
}

/// A Rekor-like log: one P-256 key signing SignedEntryTimestamps.
#[derive(Debug, Clone)]
pub struct TestRekor {
    pub key: TestKey,
}

impl TestRekor {
    pub fn new() -> Self {
        Self {
            key: TestKey::generate(),
        }
    }

    pub fn public_pem(&self) -> String {
        self.key.public_pem()
    }

    /// The log id: SHA-256 of the key's SubjectPublicKeyInfo DER.
    pub fn log_id(&self) -> Vec<u8> {
        Sha256::digest(self.key.public_der()).to_vec()
    }

    /// A `hashedrekord` v0.0.1 entry body for a signature over `payload` by the
    /// certificate `cert_pem`, as Rekor canonicalizes it.
    pub fn hashedrekord_body(payload: &[u8], signature_b64: &str, cert_pem: &str) -> Vec<u8> {
        Self::hashedrekord_body_for_digest(&Sha256::digest(payload), signature_b64, cert_pem)
    }

    /// [`Self::hashedrekord_body`] from the payload's SHA-256.
    pub fn hashedrekord_body_for_digest(
        sha256: &[u8],
        signature_b64: &str,
        cert_pem: &str,
    ) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{{"data":{{"hash":{{"algorithm":"sha256","value":"{}"}}}},"signature":{{"content":"{}","publicKey":{{"content":"{}"}}}}}}}}"#,
            hex(sha256),
            signature_b64,
            STANDARD.encode(cert_pem)
        )
        .into_bytes()
    }

    /// A `dsse` v0.0.1 entry body for a DSSE envelope signature.
    pub fn dsse_body(
        envelope: &[u8],
        payload: &[u8],
        signature_b64: &str,
        cert_pem: &str,
    ) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"0.0.1","kind":"dsse","spec":{{"envelopeHash":{{"algorithm":"sha256","value":"{}"}},"payloadHash":{{"algorithm":"sha256","value":"{}"}},"signatures":[{{"signature":"{}","verifier":"{}"}}]}}}}"#,
            hex(&Sha256::digest(envelope)),
            hex(&Sha256::digest(payload)),
            signature_b64,
            STANDARD.encode(cert_pem)
        )
        .into_bytes()
    }

    /// The SignedEntryTimestamp (base64 DER ECDSA) over the canonical JSON of the entry.
    pub fn set(&self, body_b64: &str, integrated_time: i64, log_index: i64) -> String {
        let canonical = format!(
            r#"{{"body":"{}","integratedTime":{},"logID":"{}","logIndex":{}}}"#,
            body_b64,
            integrated_time,
            hex(&self.log_id()),
            log_index
        );
        self.key.sign(canonical.as_bytes())
    }

    /// cosign's `dev.sigstore.cosign/bundle` annotation for a hashedrekord entry of this
    /// signature, with a real SET.
    pub fn rekor_bundle(
        &self,
        payload: &[u8],
        signature_b64: &str,
        cert_pem: &str,
        integrated_time: i64,
    ) -> String {
        let body = STANDARD.encode(Self::hashedrekord_body(payload, signature_b64, cert_pem));
        self.bundle_for_body(&body, integrated_time)
    }

    /// cosign's bundle annotation for an arbitrary entry body (base64).
    pub fn bundle_for_body(&self, body_b64: &str, integrated_time: i64) -> String {
        let log_index = 1000;
        serde_json::json!({
            "SignedEntryTimestamp": self.set(body_b64, integrated_time, log_index),
            "Payload": {
                "body": body_b64,
                "integratedTime": integrated_time,
                "logIndex": log_index,
                "logID": hex(&self.log_id()),
            }
        })
        .to_string()
    }

    /// A Sigstore bundle `tlogEntries` item (protobuf JSON: int64 as strings).
    pub fn tlog_entry(&self, body: &[u8], kind: &str, integrated_time: i64) -> serde_json::Value {
        let body_b64 = STANDARD.encode(body);
        let log_index = 1000;
        serde_json::json!({
            "logIndex": log_index.to_string(),
            "logId": {"keyId": STANDARD.encode(self.log_id())},
            "kindVersion": {"kind": kind, "version": "0.0.1"},
            "integratedTime": integrated_time.to_string(),
            "inclusionPromise": {"signedEntryTimestamp": self.set(&body_b64, integrated_time, log_index)},
            "canonicalizedBody": body_b64,
        })
    }
}

impl TestRekor {
    /// A Sigstore bundle `tlogEntries` item carrying an RFC 6962 inclusion proof of `body`
    /// at `index` in a tree of `tree_size` entries (the others random) with a checkpoint
    /// signed by this log, and an inclusion promise only when `with_promise`.
    pub fn tlog_entry_with_proof(
        &self,
        body: &[u8],
        kind: &str,
        integrated_time: i64,
        index: usize,
        tree_size: usize,
        with_promise: bool,
    ) -> serde_json::Value {
        assert!(index < tree_size, "index within the tree");
        let leaves: Vec<[u8; 32]> = (0..tree_size)
            .map(|i| {
                if i == index {
                    leaf_hash(body)
                } else {
                    leaf_hash(&rand_u64().to_be_bytes())
                }
            })
            .collect();
        let root = merkle_root(&leaves);
        let path = merkle_path(index, &leaves);
        let text = format!(
            "rekor.test.invalid - 2605736670972794746\n{tree_size}\n{}\n",
            STANDARD.encode(root)
        );
        let mut sig = self.log_id()[..4].to_vec();
        sig.extend(self.key.sign_der(text.as_bytes()));
        let checkpoint = format!(
            "{text}\n\u{2014} rekor.test.invalid {}\n",
            STANDARD.encode(sig)
        );
        let mut entry = self.tlog_entry(body, kind, integrated_time);
        entry["inclusionProof"] = serde_json::json!({
            "logIndex": index.to_string(),
            "rootHash": STANDARD.encode(root),
            "treeSize": tree_size.to_string(),
            "hashes": path.iter().map(|h| STANDARD.encode(h)).collect::<Vec<_>>(),
            "checkpoint": {"envelope": checkpoint},
        });
        if !with_promise {
            entry
                .as_object_mut()
                .expect("entry is an object")
                .remove("inclusionPromise");
        }
        entry
    }
}

fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 6962 MTH over leaf hashes.
fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    if leaves.len() == 1 {
        return leaves[0];
    }
    let k = split(leaves.len());
    node(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
}

/// RFC 6962 PATH(m, D[n]).
fn merkle_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if m < k {
        let mut p = merkle_path(m, &leaves[..k]);
        p.push(merkle_root(&leaves[k..]));
        p
    } else {
        let mut p = merkle_path(m - k, &leaves[k..]);
        p.push(merkle_root(&leaves[..k]));
        p
    }
}

/// The largest power of two below `n` (n > 1).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

impl Default for TestRekor {
    fn default() -> Self {
        Self::new()
    }
}

/// An RFC 3161 timestamp authority: a P-256 root and a timeStamping signing certificate,
/// issuing tokens (CMS SignedData over a TSTInfo) for signatures.
pub struct TestTsa {
    root: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    leaf_der: Vec<u8>,
    key: TestKey,
}

impl std::fmt::Debug for TestTsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestTsa").finish_non_exhaustive()
    }
}

impl TestTsa {
    pub fn new() -> Self {
        let start = time::OffsetDateTime::now_utc() - time::Duration::days(365);
        let root_key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let root = rcgen::CertifiedIssuer::self_signed(
            ca_params("imagelib test TSA root", start, 10),
            root_key,
        )
        .expect("TSA root");
        let (kp, key) = p256_pair();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "imagelib test TSA");
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::TimeStamping];
        p.not_before = start;
        p.not_after = start + time::Duration::days(3650);
        p.serial_number = Some(rcgen::SerialNumber::from(rand_u64()));
        let leaf = p.signed_by(&kp, &root).expect("TSA cert");
        Self {
            root,
            leaf_der: leaf.der().to_vec(),
            key,
        }
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    pub fn leaf_der(&self) -> Vec<u8> {
        self.leaf_der.clone()
    }

    /// A DER `TimeStampResp` (status granted) whose token says `signature` existed at `at`
    /// (SHA-256 imprint, signed attributes with the TSTInfo digest, the signing
    /// certificate included) — what a bundle's `signedTimestamp` holds.
    pub fn timestamp(&self, signature: &[u8], at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
        const SHA256: &[u8] = &[
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        ];
        const TST_INFO: &[u8] = &[
            0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x04,
        ];
        const SIGNED_DATA: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02,
        ];
        const CONTENT_TYPE: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03,
        ];
        const MESSAGE_DIGEST: &[u8] = &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04,
        ];
        const ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
        const POLICY: &[u8] = &[0x06, 0x03, 0x2a, 0x03, 0x04];
        let sha256_alg = tlv(0x30, &[SHA256, &[0x05, 0x00]].concat());
        let imprint = tlv(
            0x30,
            &[sha256_alg.clone(), tlv(0x04, &Sha256::digest(signature))].concat(),
        );
        let gen_time = tlv(0x18, at.format("%Y%m%d%H%M%SZ").to_string().as_bytes());
        let tst_info = tlv(
            0x30,
            &[
                tlv(0x02, &[1]),
                POLICY.to_vec(),
                imprint,
                tlv(0x02, &[0x01, 0x23, 0x45]),
                gen_time,
            ]
            .concat(),
        );
        let attrs = [
            tlv(0x30, &[CONTENT_TYPE, &tlv(0x31, TST_INFO)].concat()),
            tlv(
                0x30,
                &[
                    MESSAGE_DIGEST,
                    &tlv(0x31, &tlv(0x04, &Sha256::digest(&tst_info))),
                ]
                .concat(),
            ),
        ]
        .concat();
        let sig = self.key.sign_der(&tlv(0x31, &attrs));
        let signer_info = tlv(
            0x30,
            &[
                tlv(0x02, &[3]),
                tlv(0x80, &Sha256::digest(&self.leaf_der)[..20]),
                sha256_alg.clone(),
                tlv(0xa0, &attrs),
                tlv(0x30, ECDSA_SHA256),
                tlv(0x04, &sig),
            ]
            .concat(),
        );
        let encap = tlv(
            0x30,
            &[TST_INFO, &tlv(0xa0, &tlv(0x04, &tst_info))].concat(),
        );
        let signed_data = tlv(
            0x30,
            &[
                tlv(0x02, &[3]),
                tlv(0x31, &sha256_alg),
                encap,
                tlv(0xa0, &self.leaf_der),
                tlv(0x31, &signer_info),
            ]
            .concat(),
        );
        let token = tlv(0x30, &[SIGNED_DATA, &tlv(0xa0, &signed_data)].concat());
        // A TimeStampResp, as Sigstore bundles store it: status granted, then the token.
        tlv(0x30, &[tlv(0x30, &tlv(0x02, &[0])), token].concat())
    }
}

impl Default for TestTsa {
    fn default() -> Self {
        Self::new()
    }
}

/// One DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// [`trusted_root_json`] that also names `tsa` as a timestamp authority.
pub fn trusted_root_json_with_tsa(fulcio: &TestFulcio, rekor: &TestRekor, tsa: &TestTsa) -> String {
    let mut root: serde_json::Value =
        serde_json::from_str(&trusted_root_json(fulcio, rekor)).expect("own JSON");
    root["timestampAuthorities"] = serde_json::json!([{
        "subject": {"organization": "imagelib-test", "commonName": "imagelib test TSA"},
        "uri": "https://tsa.test.invalid",
        "certChain": {"certificates": [
            {"rawBytes": STANDARD.encode(tsa.leaf_der())},
            {"rawBytes": STANDARD.encode(tsa.root_der())}
        ]},
        "validFor": {"start": "2020-01-01T00:00:00Z"}
    }]);
    root.to_string()
}

/// Sigstore's `trusted_root.json` naming this CA and log.
pub fn trusted_root_json(fulcio: &TestFulcio, rekor: &TestRekor) -> String {
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": "https://rekor.test.invalid",
            "hashAlgorithm": "SHA2_256",
            "publicKey": {
                "rawBytes": STANDARD.encode(rekor.key.public_der()),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            },
            "logId": {"keyId": STANDARD.encode(rekor.log_id())}
        }],
        "certificateAuthorities": [{
            "subject": {"organization": "imagelib-test", "commonName": "imagelib test fulcio"},
            "uri": "https://fulcio.test.invalid",
            "certChain": {"certificates": [
                {"rawBytes": STANDARD.encode(fulcio.intermediate_der())},
                {"rawBytes": STANDARD.encode(fulcio.root_der())}
            ]},
            "validFor": {"start": "2020-01-01T00:00:00Z"}
        }],
        "ctlogs": [],
        "timestampAuthorities": []
    })
    .to_string()
}

/// Media type of a v0.3 Sigstore bundle.
pub const BUNDLE_V03_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

/// A v0.3 Sigstore bundle whose message signature signs the image manifest
/// `subject_digest` (`sha256:<hex>`) with `leaf`'s key, logged at `integrated_time`.
pub fn sigstore_bundle(
    leaf: &TestLeaf,
    rekor: &TestRekor,
    subject_digest: &str,
    integrated_time: i64,
) -> Vec<u8> {
    use p256::ecdsa::signature::hazmat::PrehashSigner as _;
    let digest = digest_bytes(subject_digest);
    let sig: p256::ecdsa::Signature = leaf.key.key.sign_prehash(&digest).expect("prehash sign");
    let sig_b64 = STANDARD.encode(sig.to_der().as_bytes());
    let body = TestRekor::hashedrekord_body_for_digest(&digest, &sig_b64, &leaf.cert_pem);
    serde_json::json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": {
            "certificate": {"rawBytes": STANDARD.encode(leaf.cert_der())},
            "tlogEntries": [rekor.tlog_entry(&body, "hashedrekord", integrated_time)],
        },
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(&digest)},
            "signature": sig_b64,
        }
    })
    .to_string()
    .into_bytes()
}

/// A v0.3 Sigstore bundle holding a DSSE envelope of an in-toto statement about
/// `subject_digest` with `predicate_type`/`predicate`, signed by `leaf`.
pub fn sigstore_dsse_bundle(
    leaf: &TestLeaf,
    rekor: &TestRekor,
    subject_digest: &str,
    predicate_type: &str,
    predicate: serde_json::Value,
    integrated_time: i64,
) -> Vec<u8> {
    let statement = in_toto_statement(subject_digest, predicate_type, predicate);
    let payload_type = "application/vnd.in-toto+json";
    let sig_b64 = leaf.key.sign(&dsse_pae(payload_type, &statement));
    let envelope = serde_json::json!({
        "payload": STANDARD.encode(&statement),
        "payloadType": payload_type,
        "signatures": [{"sig": sig_b64, "keyid": ""}],
    });
    let body = TestRekor::dsse_body(
        envelope.to_string().as_bytes(),
        &statement,
        &sig_b64,
        &leaf.cert_pem,
    );
    serde_json::json!({
        "mediaType": BUNDLE_V03_MEDIA_TYPE,
        "verificationMaterial": {
            "certificate": {"rawBytes": STANDARD.encode(leaf.cert_der())},
            "tlogEntries": [rekor.tlog_entry(&body, "dsse", integrated_time)],
        },
        "dsseEnvelope": envelope,
    })
    .to_string()
    .into_bytes()
}

/// An in-toto v1 statement about one image digest.
pub fn in_toto_statement(
    subject_digest: &str,
    predicate_type: &str,
    predicate: serde_json::Value,
) -> Vec<u8> {
    let hex = subject_digest
        .strip_prefix("sha256:")
        .unwrap_or(subject_digest);
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "image", "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })
    .to_string()
    .into_bytes()
}

fn digest_bytes(digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digest"))
        .collect()
}

/// A Notation signer: a CA (P-256 root) and a codeSigning leaf under it.
pub struct TestNotation {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    leaf_pem: String,
    leaf_key: NotationKey,
}

#[derive(Clone)]
enum NotationKey {
    P256(TestKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl std::fmt::Debug for TestNotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNotation").finish_non_exhaustive()
    }
}

/// The subject DN (RFC 4514) of [`TestNotation`]'s leaf.
pub const NOTATION_LEAF_SUBJECT: &str = "CN=imagelib signer,O=imagelib-test,C=US";

impl TestNotation {
    /// A P-256 CA and leaf; signatures are ES256.
    pub fn new() -> Self {
        let (kp, key) = p256_pair();
        Self::with_leaf(kp, NotationKey::P256(key))
    }

    /// A P-256 CA and an RSA-2048 leaf; signatures are PS256, as `notation sign` makes
    /// with an RSA key.
    pub fn new_rsa() -> Self {
        use rsa::pkcs8::EncodePrivateKey as _;
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA keygen");
        let der = key.to_pkcs8_der().expect("PKCS#8");
        let kp = rcgen::KeyPair::try_from(der.as_bytes()).expect("RSA key pair");
        Self::with_leaf(kp, NotationKey::Rsa(Box::new(key)))
    }

    /// A signer whose leaf is a TLS server certificate (serverAuth EKU): Notation must
    /// refuse its signatures.
    pub fn new_tls_leaf() -> Self {
        let (kp, key) = p256_pair();
        Self::build(
            kp,
            NotationKey::P256(key),
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn with_leaf(kp: rcgen::KeyPair, leaf_key: NotationKey) -> Self {
        Self::build(kp, leaf_key, rcgen::ExtendedKeyUsagePurpose::CodeSigning)
    }

    fn build(
        kp: rcgen::KeyPair,
        leaf_key: NotationKey,
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> Self {
        let start = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params("imagelib notation CA", start, 5),
            ca_key,
        )
        .expect("CA cert");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CountryName, "US");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "imagelib-test");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "imagelib signer");
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.not_before = start;
        p.not_after = start + time::Duration::days(365);
        p.serial_number = Some(rcgen::SerialNumber::from(rand_u64()));
        let leaf = p.signed_by(&kp, &ca).expect("leaf cert");
        Self {
            ca,
            leaf_pem: leaf.pem(),
            leaf_key,
        }
    }

    /// The JWS `alg` this signer uses.
    pub fn alg(&self) -> &'static str {
        match self.leaf_key {
            NotationKey::P256(_) => "ES256",
            NotationKey::Rsa(_) => "PS256",
        }
    }

    /// The CA certificate (PEM): the trust store content.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn leaf_pem(&self) -> String {
        self.leaf_pem.clone()
    }

    /// A JWS envelope (`application/jose+json`) signing the payload
    /// `{"targetArtifact":{mediaType,digest,size}}` with ES256, `notary.x509` scheme, an
    /// expiry a year ahead and `x5c` = [leaf, CA].
    pub fn sign_jws(
        &self,
        subject_digest: &str,
        subject_media_type: &str,
        subject_size: u64,
    ) -> Vec<u8> {
        let payload = serde_json::json!({
            "targetArtifact": {
                "mediaType": subject_media_type,
                "digest": subject_digest,
                "size": subject_size,
            }
        })
        .to_string();
        let now = chrono::Utc::now();
        let protected = serde_json::json!({
            "alg": self.alg(),
            "cty": "application/vnd.cncf.notary.payload.v1+json",
            "io.cncf.notary.signingScheme": "notary.x509",
            "io.cncf.notary.signingTime": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "io.cncf.notary.expiry": (now + chrono::Duration::days(365)).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "crit": ["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"],
        })
        .to_string();
        self.sign_jws_raw(protected.as_bytes(), payload.as_bytes())
    }

    /// A JWS envelope over arbitrary protected header and payload bytes.
    pub fn sign_jws_raw(&self, protected: &[u8], payload: &[u8]) -> Vec<u8> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let protected_b64 = URL_SAFE_NO_PAD.encode(protected);
        let payload_b64 = URL_SAFE_NO_PAD.encode(payload);
        let input = format!("{protected_b64}.{payload_b64}");
        let sig = match &self.leaf_key {
            NotationKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.key.sign(input.as_bytes());
                sig.to_bytes().to_vec()
            }
            NotationKey::Rsa(k) => {
                use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
                rsa::pss::SigningKey::<Sha256>::new((**k).clone())
                    .sign_with_rng(&mut OsRng, input.as_bytes())
                    .to_vec()
            }
        };
        serde_json::json!({
            "payload": payload_b64,
            "protected": protected_b64,
            "header": {
                "x5c": [
                    STANDARD.encode(pem_to_der(&self.leaf_pem)),
                    STANDARD.encode(self.ca.der()),
                ],
                "io.cncf.notary.signingAgent": "imagelib-testkit/1.0",
            },
            "signature": URL_SAFE_NO_PAD.encode(sig),
        })
        .to_string()
        .into_bytes()
    }
}

impl Default for TestNotation {
    fn default() -> Self {
        Self::new()
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosign_payload_is_goes_marshal_shape() {
        let p = cosign_payload("reg.example/app", "sha256:ab");
        assert_eq!(
            String::from_utf8(p).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"reg.example/app"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
    }

    #[test]
    fn signature_verifies_with_the_public_key() {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let k = TestKey::generate();
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&k.public_pem()).unwrap();
        let der = STANDARD.decode(k.sign(b"hello")).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert!(vk.verify(b"hello", &sig).is_ok());
        assert!(vk.verify(b"hellO", &sig).is_err());
        assert!(k.key_id().starts_with("sha256:"));
    }

    #[test]
    fn dsse_envelope_signs_the_pae() {
        assert_eq!(dsse_pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
        let k = TestKey::generate();
        let env: serde_json::Value =
            serde_json::from_slice(&dsse_envelope("application/vnd.in-toto+json", b"{}", &k))
                .unwrap();
        assert_eq!(env["payload"], "e30=");
        assert!(env["signatures"][0]["sig"].as_str().is_some());
    }

    #[test]
    fn rekor_bundle_carries_a_set_over_the_canonical_entry() {
        use p256::ecdsa::signature::Verifier as _;
        use p256::pkcs8::DecodePublicKey as _;
        let rekor = TestRekor::new();
        let bundle: serde_json::Value =
            serde_json::from_str(&rekor.rekor_bundle(b"payload", "c2ln", "PEM", 1_700_000_000))
                .unwrap();
        let p = &bundle["Payload"];
        let canonical = format!(
            r#"{{"body":"{}","integratedTime":1700000000,"logID":"{}","logIndex":{}}}"#,
            p["body"].as_str().unwrap(),
            hex(&rekor.log_id()),
            p["logIndex"]
        );
        let set = STANDARD
            .decode(bundle["SignedEntryTimestamp"].as_str().unwrap())
            .unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&rekor.public_pem()).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&set).unwrap();
        assert!(vk.verify(canonical.as_bytes(), &sig).is_ok());
        let body: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(p["body"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(body["kind"], "hashedrekord");
        assert_eq!(
            body["spec"]["data"]["hash"]["value"],
            hex(&Sha256::digest(b"payload"))
        );
    }

    #[test]
    fn fulcio_leaf_and_trusted_root_have_the_expected_shape() {
        let fulcio = TestFulcio::new();
        let now = chrono::Utc::now();
        let leaf = fulcio.issue(
            San::Email("a@b.test".into()),
            "https://issuer.test",
            now,
            now + chrono::Duration::minutes(10),
        );
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(leaf.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        let der = leaf.cert_der();
        // The issuer extension's value is a DER UTF8String of the issuer.
        let needle = der_utf8("https://issuer.test");
        assert!(der.windows(needle.len()).any(|w| w == needle));
        let root: serde_json::Value =
            serde_json::from_str(&trusted_root_json(&fulcio, &TestRekor::new())).unwrap();
        assert_eq!(
            root["mediaType"],
            "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
        );
        assert_eq!(
            root["certificateAuthorities"][0]["certChain"]["certificates"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
